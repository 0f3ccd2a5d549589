"""Command blocks of the deployment docs, for the tests that run them.

A block that a test runs is marked just above its fence:

    <!-- run-by: test_engine_compose.py#install -->

and that test file reads it with `doc_block("deploy-compose.md", "install")`,
so the docs cannot drift from what is tested. A block no test runs says why:

    <!-- not-run: follows the log until interrupted -->

tests/test_docs.py checks that every command block of the deployment pages
carries one of the two, and that each run-by names a test that reads it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"
MARKED_PAGES = ("deploy-compose.md", "deploy-systemd.md")
BLOCK = re.compile(
    r"(?:<!-- (?P<kind>run-by|not-run): (?P<value>[^>]*?) -->\n)?```(?P<lang>bash|console|sh)\n(?P<body>.*?)\n```",
    re.S,
)


@dataclass
class Block:
    page: str
    kind: str | None  # "run-by", "not-run" or None
    value: str
    body: str

    @property
    def test_file(self) -> str:
        return self.value.partition("#")[0]

    @property
    def id(self) -> str:
        return self.value.partition("#")[2]


def blocks(page: str) -> list[Block]:
    text = (DOCS / page).read_text()
    return [Block(page, m["kind"], (m["value"] or "").strip(), m["body"]) for m in BLOCK.finditer(text)]


def doc_block(page: str, block_id: str) -> str:
    """The commands of the block marked `run-by: <file>#<block_id>` in docs/<page>."""
    found = [block for block in blocks(page) if block.kind == "run-by" and block.id == block_id]
    assert len(found) == 1, f"docs/{page}: {len(found)} blocks marked #{block_id}"
    return found[0].body
