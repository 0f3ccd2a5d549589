"""Certificates for TLS brokers, from a CA of the tests' own (trustme)."""

from __future__ import annotations

import datetime
from pathlib import Path

import trustme


def certificates(directory: Path) -> dict:
    """name -> (chain file, key file) of a server certificate:

    - good: for 127.0.0.1 and localhost, where the tests' brokers listen;
    - expired: for 127.0.0.1, a day past its end;
    - elsewhere: for another name only;

    and "ca", "other-ca" -> a CA's certificate file (the first signed them all).
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca, now, day = trustme.CA(), datetime.datetime.now(datetime.UTC), datetime.timedelta(days=1)
    leaves = {
        "good": ca.issue_cert("127.0.0.1", "localhost"),
        "expired": ca.issue_cert("127.0.0.1", not_before=now - 30 * day, not_after=now - day),
        "elsewhere": ca.issue_cert("broker.elsewhere.example"),
    }
    files: dict = {}
    for name, leaf in leaves.items():
        chain, key = directory / f"{name}.pem", directory / f"{name}.key"
        chain.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key))
        files[name] = (chain, key)
    for name, authority in (("ca", ca), ("other-ca", trustme.CA())):
        files[name] = directory / f"{name}.pem"
        authority.cert_pem.write_to_path(str(files[name]))
    return files
