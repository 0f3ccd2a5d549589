"""How long `copier copy` of the defaults takes. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/render_time.py [--runs 10]

See docs/benchmarks.md.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers import ROOT, render  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    timings = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            started = time.perf_counter()
            render(Path(tmp) / f"project{run}", {}, src=ROOT)
            timings.append(time.perf_counter() - started)
    print(f"copier copy of the defaults, {args.runs} runs (includes the git init and uv lock tasks):")
    print(f"  min {min(timings):.2f} s  median {statistics.median(timings):.2f} s  max {max(timings):.2f} s")


if __name__ == "__main__":
    main()
