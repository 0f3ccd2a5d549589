"""Carry a project's edits over when the template renames one of its files.

    python renamed_file.py OLD NEW --template PATH --answers-file FILE

On `copier update`, Copier deletes a file the new template no longer has and
writes the renamed file fresh, so whatever the project changed in OLD would
be lost. copier.yml runs this after the update (`_migrations`); it three-way
merges the project's edits into NEW, as Copier merges any other file:

    base    OLD as the previous template version rendered it, rendered again
            here with the project's previous answers
    ours    OLD as the project last committed it (git HEAD)
    theirs  NEW as the new template version wrote it

A conflict leaves Copier's inline markers in NEW, to resolve by hand. The
script changes nothing when the project never had OLD, left it unedited, or
already had a NEW of its own; running it twice gives the same result.
Copier passes the version the project came from in $VERSION_FROM.
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import copier
import yaml


def committed(path: str) -> bytes | None:
    """The file as the project's HEAD has it, or None. `./` keeps the path
    relative to the project, which may be a subdirectory of its repository."""
    show = subprocess.run(["git", "show", f"HEAD:./{path}"], capture_output=True)
    return show.stdout if show.returncode == 0 else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--template", required=True, help="local clone of the template")
    parser.add_argument("--answers-file", default=".copier-answers.yml")
    args = parser.parse_args()

    ours = committed(args.old)
    if ours is None:
        return 0  # The project never had OLD, or removed it: nothing to carry over.
    if committed(args.new) is not None:
        print(
            f"{args.old} became {args.new} in the template, but the project already had "
            f"its own {args.new}: merge your {args.old} into it by hand "
            f"(git show HEAD:{args.old}).",
            file=sys.stderr,
        )
        return 0
    new = Path(args.new)
    if not new.is_file():
        return 0  # Excluded from this project (or deleted by the user since).

    answers = yaml.safe_load(committed(args.answers_file) or b"{}") or {}
    with tempfile.TemporaryDirectory(prefix="copier-migration-") as tmp:
        previous = Path(tmp, "previous")
        try:
            copier.run_copy(
                args.template,
                previous,
                data={key: value for key, value in answers.items() if not key.startswith("_")},
                vcs_ref=os.environ["VERSION_FROM"],
                defaults=True,
                overwrite=True,
                quiet=True,
                skip_tasks=True,
                unsafe=True,
            )
        except Exception as exc:  # The update itself is done: say what is left to do.
            print(
                f"{args.old} became {args.new}, but the previous release did not render ({exc}): "
                f"merge your {args.old} (git show HEAD:{args.old}) into {args.new} by hand.",
                file=sys.stderr,
            )
            return 0
        base = previous / args.old
        if not base.is_file() or base.read_bytes() == ours:
            return 0  # Not edited: the template's NEW is already right.
        merged = Path(tmp, "ours")
        merged.write_bytes(ours)
        # The labels Copier uses for its own inline conflicts.
        conflicts = subprocess.run(
            ["git", "merge-file", "-L", "before updating", "-L", "last update", "-L", "after updating",
             str(merged), str(base), str(new)],
        ).returncode  # fmt: skip
        if not 0 <= conflicts <= 127:  # The number of conflicts, capped at 127; more is an error.
            raise SystemExit(f"git merge-file failed on {args.new}")
        new.write_bytes(merged.read_bytes())
    if conflicts:
        print(f"{args.old} became {args.new}: resolve the conflict markers in {args.new}.", file=sys.stderr)
    else:
        print(f"{args.old} became {args.new}, with your edits.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
