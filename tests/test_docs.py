"""The documentation site (mkdocs.yml, docs/): it builds strictly, so a broken
link or anchor fails the suite, and the generated questions reference matches
copier.yml."""

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from helpers import ROOT

BIN = Path(sys.executable).parent


def load_script():
    spec = importlib.util.spec_from_file_location("questions_reference", ROOT / "scripts" / "questions_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_site_builds_strictly(tmp_path):
    site = tmp_path / "site"
    proc = subprocess.run(
        [BIN / "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": str(BIN) + ":/usr/bin:/bin", "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    # Material renders these blocks with Mermaid; a plain code block would show the source.
    architecture = (site / "architecture" / "index.html").read_text()
    assert architecture.count('<pre class="mermaid">') >= 3
    home = (site / "index.html").read_text()
    assert '<pre class="mermaid">' in home


def test_every_page_is_in_the_nav():
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)

    def pages(items):
        for item in items:
            for value in item.values():
                yield from pages(value) if isinstance(value, list) else [value]

    assert sorted(pages(config["nav"])) == sorted(p.name for p in (ROOT / "docs").glob("*.md"))


def test_the_questions_reference_is_current():
    """docs/questions.md is what scripts/questions_reference.py writes from copier.yml."""
    proc = subprocess.run(
        [sys.executable, ROOT / "scripts" / "questions_reference.py", "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr


def test_every_question_has_help_and_an_example():
    script = load_script()
    assert script.problems() == []
    asked = [key for key, question in script.load_questions().items() if script.is_asked(question)]
    page = (ROOT / "docs" / "questions.md").read_text()
    for key in asked:
        assert re.search(rf"^## `{key}` ", page, re.M), key


def test_copier_accepts_every_example_answer(tmp_path):
    """The examples, passed exactly as the page shows them, make a valid project."""
    arguments = shlex.split(" ".join(load_script().data_arguments()))
    proc = subprocess.run(
        [BIN / "copier", "copy", "--trust", "--defaults", "--pretend", "--vcs-ref", "HEAD", "--skip-tasks",
         *arguments, str(ROOT), str(tmp_path / "project")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Validation error" not in proc.stderr


def test_the_home_page_shows_the_readmes_two_commands():
    """test_readme.py runs the README's commands; the home page must show the same."""
    readme = (ROOT / "README.md").read_text()
    home = (ROOT / "docs" / "index.md").read_text()
    for marker in ("generate-command", "test-command"):
        command = re.search(rf"<!-- {marker} -->\s*```bash\n(.+?)\n```", readme, re.S).group(1)
        assert f"```bash\n{command}\n```" in home, marker


def test_the_readmes_questions_table_names_every_question_with_its_default():
    """README.md keeps a short table of the questions; it must not drift from copier.yml."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## The questions", 1)[1].split("\n\n", 3)[2]
    rows = {}
    for line in table.splitlines()[2:]:
        keys, kind, default, _ = (cell.strip() for cell in line.strip("|").split("|", 3))
        for key in re.findall(r"`(\w+)`", keys):
            rows[key] = (kind, default)
    script = load_script()
    asked = {key: q for key, q in script.load_questions().items() if script.is_asked(q) and not q.get("secret")}
    assert sorted(rows) == sorted(asked)
    for key, question in asked.items():
        kind, default = rows[key]
        expected_kind = "multiselect" if question.get("multiselect") else question["type"]
        expected_kind = "choice" if "choices" in question and expected_kind == "str" else expected_kind
        assert kind == expected_kind, key
        value = question.get("default")
        if isinstance(value, str) and "{{" in value or value in (None, ""):
            continue  # computed, or none: the README says so in words
        if isinstance(value, bool):
            value = str(value).lower()
        elif isinstance(value, list):
            value = "[" + ", ".join(value) + "]"
        assert default == f"`{value}`", key


def test_every_deployment_command_block_says_which_test_runs_it_or_why_none_does():
    from enginelab.docs import MARKED_PAGES, blocks

    for page in MARKED_PAGES:
        for block in blocks(page):
            first = block.body.splitlines()[0]
            assert block.kind, f"docs/{page}: the block `{first}` has no run-by or not-run marker"
            if block.kind == "not-run":
                assert len(block.value) > 10, f"docs/{page}: `{first}`: say why no test runs it"
                continue
            test_file = Path(__file__).parent / block.test_file
            assert test_file.exists(), f"docs/{page}: run-by names {block.test_file}, which does not exist"
            source = test_file.read_text()
            assert f'doc_block("{page}"' in source and f'"{block.id}"' in source, (
                f"docs/{page}: {block.test_file} never reads block #{block.id} with doc_block"
            )
