"""The documentation site as a reader sees it: built by MkDocs, served, and
opened in headless Chromium (Debian's `chromium` and `chromium-driver`).

Material draws the Mermaid diagrams in the browser, with the Mermaid release
its bundle names on unpkg.com. This machine reaches package registries only,
so the test fetches that same major release from the npm registry (once, into
.cache/) and serves it from the built site in unpkg's place. A diagram Mermaid
cannot parse stays source text, and the test fails on it.
"""

import contextlib
import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
from pathlib import Path

import pytest

from helpers import CACHE, IN_CI, ROOT, chromium

BIN = Path(sys.executable).parent
UNPKG = re.compile(r"https://unpkg\.com/mermaid@([\w.]+)/dist/mermaid\.min\.js")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def mermaid_release(version: str) -> Path:
    """dist/mermaid.min.js of mermaid@`version`, from the npm registry (cached)."""
    target = CACHE / f"mermaid-{version}" / "mermaid.min.js"
    if not target.exists():
        npm = shutil.which("npm")
        if not npm:
            if IN_CI:
                pytest.fail("npm is needed to fetch Mermaid (Debian: nodejs, npm)", pytrace=False)
            pytest.skip("npm is not installed")
        # Each xdist worker that runs a test of this module builds the site,
        # so two may fetch at once: each packs into a directory of its own
        # and renames its copy into place, which is atomic.
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as workdir:
            packed = subprocess.run(
                [npm, "pack", f"mermaid@{version}", "--pack-destination", workdir],
                capture_output=True, text=True, timeout=300, check=True,
            )  # fmt: skip
            with tarfile.open(Path(workdir) / packed.stdout.strip().splitlines()[-1]) as archive:
                member = archive.extractfile("package/dist/mermaid.min.js")
                (Path(workdir) / "mermaid.min.js").write_bytes(member.read())
            os.replace(Path(workdir) / "mermaid.min.js", target)
    return target


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The built site, served on a free loopback port, with Mermaid served locally."""
    root = tmp_path_factory.mktemp("site")
    subprocess.run([BIN / "mkdocs", "build", "--quiet", "--site-dir", str(root)], cwd=ROOT, check=True, timeout=300)
    (bundle,) = (root / "assets" / "javascripts").glob("bundle.*.min.js")
    code = bundle.read_text()
    found = UNPKG.search(code)
    assert found, "Material's bundle no longer names Mermaid on unpkg: update this test"
    shutil.copy(mermaid_release(found.group(1)), root / "mermaid.min.js")
    bundle.write_text(code.replace(found.group(0), "/mermaid.min.js"))
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    browser = chromium(tmp_path_factory.mktemp("chromium"), "--window-size=1280,900")
    yield browser
    browser.quit()


def pages_with_diagrams() -> dict[str, int]:
    """Site path of each page with Mermaid blocks: how many it has."""
    pages = {}
    for page in sorted((ROOT / "docs").glob("*.md")):
        if count := len(re.findall(r"^```mermaid$", page.read_text(), re.M)):
            pages["/" if page.stem == "index" else f"/{page.stem}/"] = count
    return pages


@pytest.mark.parametrize("path", list(pages_with_diagrams()))
def test_every_diagram_is_drawn(site, driver, path, tmp_path):
    """Material replaces each Mermaid block by a drawing (an SVG in a shadow root):
    no block may stay source text, and each drawing has a size."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    expected = pages_with_diagrams()[path]
    driver.get(site + path)
    # Before drawing, Material keeps the source in <pre class="mermaid"><code>.
    drawn = "return [...document.querySelectorAll('div.mermaid')].filter(e => e.offsetHeight > 40).length"
    with contextlib.suppress(TimeoutException):  # the assertion below says what is missing
        WebDriverWait(driver, 30).until(lambda d: d.execute_script(drawn) >= expected)
    driver.save_screenshot(str(tmp_path / "page.png"))
    left = driver.execute_script("return document.querySelectorAll('pre.mermaid').length")
    assert (driver.execute_script(drawn), left) == (expected, 0), f"{path}: screenshot in {tmp_path}"
