import ssl

import pytest

from ops import tls


def test_a_rediss_url_verifies_the_certificate_and_the_name():
    url = "rediss://:secret@redis.example:6380/0"
    verified = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_check_hostname": True}
    assert tls.redis_options(url, True, None) == verified
    with_ca = tls.redis_options(url, True, "/etc/ca.pem")
    assert with_ca["ssl_ca_certs"] == "/etc/ca.pem"
    assert tls.redis_options(url, False, "/etc/ca.pem") == {"ssl_cert_reqs": ssl.CERT_NONE}
    assert tls.redis_options("redis://redis.example:6379/0", True, None) is None


def test_an_amqps_url_verifies_the_certificate_and_the_name():
    url = "amqps://user:secret@rabbit.example:5671/vhost"
    options = tls.amqp_options(url, True, None)
    # kombu replaces server_hostname None by the URL's host, which turns the name check on.
    assert options == {"cert_reqs": ssl.CERT_REQUIRED, "server_hostname": None}
    assert tls.amqp_options(url, True, "/etc/ca.pem")["ca_certs"] == "/etc/ca.pem"
    assert tls.amqp_options(url, False, None) == {"cert_reqs": ssl.CERT_NONE}
    assert tls.amqp_options("amqp://rabbit.example//", True, None) is None
    # A failover list: its first URL's scheme.
    assert tls.amqp_options("amqps://a:5671//;amqps://b:5671//", True, None) is not None


@pytest.mark.parametrize(
    ("url", "verify", "unverified"),
    [
        ("rediss://r:6380/0", True, False),
        ("rediss://r:6380/0", False, True),
        ("rediss://r:6380/0?ssl_cert_reqs=none", True, True),
        ("rediss://r:6380/0?ssl_cert_reqs=CERT_OPTIONAL", True, True),
        ("rediss://r:6380/0?ssl_cert_reqs=required", False, False),  # the URL's options win
        ("redis://r:6379/0", False, False),  # no TLS: nothing to verify
        ("amqps://r:5671//", False, True),
    ],
)
def test_what_counts_as_unverified(url, verify, unverified):
    make = tls.redis_options if url.startswith("redis") else tls.amqp_options
    options = make(url, verify, None)
    assert tls.unverified(url, options) is unverified
