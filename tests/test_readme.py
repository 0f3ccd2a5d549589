"""The README's two commands are the ones that work, and the ones CI runs."""

import re
import subprocess

from helpers import ROOT

README = (ROOT / "README.md").read_text()


def command_after(marker: str) -> str:
    match = re.search(rf"<!-- {marker} -->\s*```bash\n(.+?)\n```", README, re.DOTALL)
    assert match, f"no ```bash block after <!-- {marker} --> in README.md"
    return match.group(1).strip()


def test_ci_runs_the_readme_test_command():
    script = (ROOT / ".ci" / "run").read_text()
    awk = re.search(r"command=\$\((awk .+ README\.md)\)", script).group(1)
    extracted = subprocess.run(["bash", "-c", awk], cwd=ROOT, capture_output=True, text=True, check=True)
    assert extracted.stdout.strip() == command_after("test-command")
    assert "pytest" in extracted.stdout


def test_generate_command_produces_a_project(tmp_path):
    """Run the README's generate command in a fresh clone, answering the defaults."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    command = command_after("generate-command")
    # An absolute template path, so the project can `copier update` later.
    assert command.rstrip().endswith('copy --trust "$PWD" ../my_project')
    proc = subprocess.run(
        ["bash", "-c", command + " --defaults"],
        cwd=clone,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    project = tmp_path / "my_project"
    assert (project / "manage.py").exists()
    answers = (project / ".copier-answers.yml").read_text()
    assert "project_slug: my_project" in answers
    assert f"_src_path: {clone}" in answers
