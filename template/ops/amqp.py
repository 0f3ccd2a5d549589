"""amqps:// for a failover list: each node's certificate is checked against
that node's own name.

ops/tls.py asks for the name check with `server_hostname: None`, which kombu
fills in with the URL's host when it connects. But it fills it in place, in
the options every connection of the process shares (CELERY_BROKER_USE_SSL):
the first node's name then stays, and after a failover the next node's
certificate is checked against the first node's name, and refused ("IP address
mismatch", "Hostname mismatch"). This transport lets kombu fill in a copy, one
per connection attempt. https://docs.celeryq.dev/en/stable/userguide/configuration.html#broker-url
"""

from kombu.transport import pyamqp


class SSLTransport(pyamqp.SSLTransport):
    def establish_connection(self):
        options = self.client.ssl
        if isinstance(options, dict) and options.get("server_hostname", "") is None:
            self.client.ssl = dict(options)  # kombu fills in this copy
        return super().establish_connection()
