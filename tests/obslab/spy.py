"""Python stacks of live processes, for a failure message."""

import subprocess
import sys
from pathlib import Path


def stacks(*pids: int) -> str:
    """Each process's Python stacks (py-spy dump)."""
    spy = Path(sys.executable).with_name("py-spy")
    found = []
    for pid in pids:
        done = subprocess.run([str(spy), "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60)
        found.append(done.stdout or done.stderr)
    return "\n".join(found)
