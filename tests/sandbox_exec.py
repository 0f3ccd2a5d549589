"""Exec a command under the system-call part of a systemd unit's sandbox.

    /usr/bin/python3 sandbox_exec.py SPEC_JSON -- COMMAND [ARG...]

SPEC_JSON: {"allow": [syscall, ...], "errno": "EPERM", "families": ["AF_UNIX", ...],
"umask": "0077"}. Loads a seccomp filter that allows exactly those system calls
(SystemCallFilter=), fails the others with `errno` (SystemCallErrorNumber=),
allows socket() only for those families (RestrictAddressFamilies=), sets
no_new_privs (NoNewPrivileges=) and the umask (UMask=), then execs COMMAND.

The boot tests run each service through this, since systemd is not PID 1 here.
It needs libseccomp's Python binding: Debian's python3-seccomp, for
/usr/bin/python3 (.ci/apt-packages).
"""

import contextlib
import errno
import json
import os
import socket
import sys

import seccomp


def main() -> None:
    spec = json.loads(sys.argv[1])
    assert sys.argv[2] == "--", "usage: sandbox_exec.py SPEC_JSON -- COMMAND [ARG...]"
    command = sys.argv[3:]
    os.umask(int(spec["umask"], 8))
    refused = seccomp.ERRNO(getattr(errno, spec["errno"]))
    # Only the native architecture (SystemCallArchitectures=native); no_new_privs is on by default.
    syscalls = seccomp.SyscallFilter(defaction=refused)
    for name in sorted(set(spec["allow"]) - {"socket"}):
        # Skip a name this kernel or architecture does not have.
        with contextlib.suppress(RuntimeError, ValueError):
            syscalls.add_rule(seccomp.ALLOW, name)
    if "socket" in spec["allow"]:
        for family in spec["families"]:
            syscalls.add_rule(seccomp.ALLOW, "socket", seccomp.Arg(0, seccomp.EQ, getattr(socket, family)))
    syscalls.load()
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
