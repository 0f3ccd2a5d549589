"""The nginx site (deploy/nginx/): valid for Debian's nginx (`nginx -t`), TLS,
static files, Flower under /flower/ with /flower/metrics blocked.

test_deploy_boot_systemd.py runs it live in front of gunicorn and Flower."""

import os
import re
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from deploy_host import answers, host_paths, nginx_command, nginx_root, nginx_site, slug

from helpers import free_port, http, start, wait_for_port
from variants import MATRIX

VARIANTS = {
    "defaults": MATRIX["redis-djangodb-postgresql"],
    "odd-queues": MATRIX["rabbitmq-redis-postgresql"],
    "no-flower": {"use_flower": False, "deploy": ["systemd"], "domain_name": "app.example.org"},
    "flower-port": {"flower_port": 6001, "deploy": ["systemd"]},
}


@pytest.fixture(scope="module", params=list(VARIANTS), ids=list(VARIANTS))
def project(request, rendered):
    return rendered(VARIANTS[request.param])


def location_block(text: str, pattern: str) -> str:
    """A location's body in the HTTPS server (port 80 has a `location /` of its own)."""
    text = text[text.index("listen 443 ssl;") :]
    match = re.search(rf"^\s*location {pattern} \{{(.*?)^\s*\}}", text, re.M | re.S)
    assert match, f"no `location {pattern}` block"
    return match.group(1)


def test_nginx_t_passes_in_a_test_root(project, tmp_path):
    """Debian's nginx parses the site and loads its (stand-in) certificate."""
    main = nginx_root(project, tmp_path, app_dir=tmp_path / "app")
    proc = subprocess.run(nginx_command(main, "-t"), capture_output=True, text=True, timeout=60)
    print(proc.stderr)
    assert proc.returncode == 0, proc.stderr
    assert "syntax is ok" in proc.stderr and "test is successful" in proc.stderr


def test_tls_with_placeholder_certificate_paths(project):
    text = nginx_site(project).read_text()
    domain = answers(project)["domain_name"]
    assert re.search(r"^\s*listen 443 ssl;", text, re.M)
    assert f"ssl_certificate /etc/letsencrypt/live/{domain}/fullchain.pem;" in text
    assert f"ssl_certificate_key /etc/letsencrypt/live/{domain}/privkey.pem;" in text
    assert re.search(r"^\s*server_name " + re.escape(domain) + ";", text, re.M)
    # Port 80 redirects, but for certbot's challenges (test_plain_http_serves_certbot_and_redirects_the_rest).
    assert "return 301 https://$host$request_uri;" in text


def test_plain_http_serves_certbot_and_redirects_the_rest(project, tmp_path):
    """certbot renews through port 80 (`--webroot -w /var/www/html`): its challenge
    files are served from there, and every other path goes to HTTPS."""
    # nginx's workers (www-data) read the webroot: world-readable, outside pytest's tmp dirs.
    webroot = Path(tempfile.mkdtemp(prefix="cdc-acme-", dir="/var/tmp"))
    try:
        webroot.chmod(0o755)
        challenge = webroot / ".well-known" / "acme-challenge"
        challenge.mkdir(parents=True)
        (challenge / "token-123").write_text("token-123.key-authorization")
        for directory in (webroot / ".well-known", challenge):
            directory.chmod(0o755)
        (challenge / "token-123").chmod(0o644)
        ports = {"http": free_port(), "https": free_port(), "web": free_port(), "flower": free_port()}
        main = nginx_root(project, tmp_path, app_dir=tmp_path / "app", ports=ports, webroot=webroot)
        nginx = start("nginx", nginx_command(main, "-g", "daemon off;"), tmp_path, dict(os.environ), tmp_path / "logs")
        try:
            wait_for_port(ports["http"], proc=nginx.proc)
            base = f"http://127.0.0.1:{ports['http']}"
            assert http(f"{base}/.well-known/acme-challenge/token-123") == (200, "token-123.key-authorization")

            class NoRedirect(urllib.request.HTTPRedirectHandler):
                def redirect_request(self, *args, **kwargs):
                    return None

            with pytest.raises(urllib.error.HTTPError) as redirected:
                urllib.request.build_opener(NoRedirect).open(f"{base}/admin/?next=/", timeout=10)
            assert redirected.value.code == 301
            assert redirected.value.headers["Location"] == "https://127.0.0.1/admin/?next=/"
        finally:
            nginx.kill()
    finally:
        shutil.rmtree(webroot, ignore_errors=True)


def test_static_files_and_web_proxy(project):
    text = nginx_site(project).read_text()
    static = location_block(text, "/static/")
    assert f"alias {host_paths(project)['app']}/staticfiles/;" in static
    root = location_block(text, "/")
    assert f"proxy_pass http://{slug(project)}_web;" in root
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in root
    assert re.search(r"upstream \w+_web \{\s*#[^\n]*\n\s*server 127\.0\.0\.1:8000;", text)


def test_flower_under_its_url_prefix_with_metrics_blocked(project):
    text = nginx_site(project).read_text()
    data = answers(project)
    if not data["use_flower"]:
        assert "flower" not in text.lower().replace(f"{slug(project)}-flower", "")
        return
    flowerconfig = (project / "flowerconfig.py").read_text()
    prefix = re.search(r'^url_prefix = "(\w+)"', flowerconfig, re.M).group(1)
    proxy = location_block(text, f"/{prefix}/")
    # No URI part after the upstream: Flower gets the /flower/ path it expects.
    assert re.search(rf"proxy_pass http://{slug(project)}_flower;", proxy)
    assert f"server 127.0.0.1:{data.get('flower_port', 5555)};" in text
    # A ^~ prefix location beats /flower/ and every regex location.
    blocked = location_block(text, rf"\^~ /{prefix}/metrics")
    assert re.fullmatch(r"\s*return 40[34];\s*", blocked), blocked
