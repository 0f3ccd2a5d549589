"""TLS to the broker and the Redis result backend: the server's certificate is
verified, by default (config/settings.py; docs: "Managed Redis with TLS").

Left to themselves, the clients verify less than a team would expect:

- kombu connects to a bare rediss:// URL without checking the certificate at all
  ("Secure redis scheme specified (rediss) with no ssl options, defaulting to
  insecure SSL behaviour");
- py-amqp checks an amqps:// server's chain, but not its name.

These options make both check the chain, against the system's CAs or those of
BROKER_TLS_CA_FILE, and the host name of the URL. BROKER_TLS_VERIFY=false turns
the check off, and `check --deploy` warns about it (ops/checks.py).
"""

import ssl
from urllib.parse import parse_qs, urlsplit

# Each setting naming a broker or result backend URL, with the setting of its SSL
# options: what ops/checks.py and ops/cluster.py look at.
LINKS = (
    ("CELERY_BROKER_URL", "CELERY_BROKER_USE_SSL"),
    ("CELERY_RESULT_BACKEND", "CELERY_REDIS_BACKEND_USE_SSL"),
)

# ssl_cert_reqs values of a rediss:// URL that do not verify (kombu and redis-py
# take the names in either spelling): such a URL overrides the settings.
UNVERIFIED = {"none", "optional", "cert_none", "cert_optional"}


def scheme(url: str) -> str:
    """The scheme of a URL, or of the first URL of a failover list (a;b)."""
    return urlsplit(url.split(";", 1)[0].strip()).scheme


def redis_options(url: str, verify: bool, ca_file: str | None) -> dict | None:
    """redis-py's SSL options for a rediss:// URL (CELERY_BROKER_USE_SSL,
    CELERY_REDIS_BACKEND_USE_SSL); None for any other URL."""
    if scheme(url) != "rediss":
        return None
    if not verify:
        return {"ssl_cert_reqs": ssl.CERT_NONE}
    # The CA file adds to the system's CAs. The host name is checked: redis-py's
    # default since 6.0, stated here for any older client.
    options = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_check_hostname": True}
    if ca_file:
        options["ssl_ca_certs"] = ca_file
    return options


def amqp_options(url: str, verify: bool, ca_file: str | None) -> dict | None:
    """py-amqp's SSL options for an amqps:// URL (CELERY_BROKER_USE_SSL); None for
    any other URL. https://docs.celeryq.dev/en/stable/userguide/configuration.html#broker-use-ssl
    """
    if scheme(url) != "amqps":
        return None
    if not verify:
        return {"cert_reqs": ssl.CERT_NONE}
    # server_hostname None: kombu puts the URL's host there, which turns on
    # py-amqp's name check (and SNI).
    options = {"cert_reqs": ssl.CERT_REQUIRED, "server_hostname": None}
    if ca_file:
        options["ca_certs"] = ca_file  # instead of the system's CAs, for py-amqp
    return options


def unverified(url: str, options: dict | None) -> bool:
    """Whether a TLS connection to `url` with these options skips the certificate check."""
    if scheme(url) not in ("rediss", "amqps"):
        return False
    query = parse_qs(urlsplit(url.split(";", 1)[0].strip()).query)
    if given := query.get("ssl_cert_reqs"):
        return given[-1].lower() in UNVERIFIED  # the URL's SSL options replace the settings'
    options = options or {}
    return ssl.CERT_NONE in (options.get("ssl_cert_reqs"), options.get("cert_reqs"))
