"""The weak tier's fence: Linux Landlock, set by a small boot program that then execs the real one.

Without bubblewrap there is no mount namespace, so the program would see the host's files with its
uid's rights (as root's dedicated uid: every world-writable dir, such as ``/tmp``; as a normal user:
everything that user owns). Landlock (Linux ≥ 5.13, unprivileged, inherited across ``execve`` and
impossible to lift) narrows that to: read and execute in the system directories and the
interpreter's prefix, read and write only beneath the run's scratch dir (and ``/dev/null``). Where
the kernel offers them it also denies TCP bind/connect (ABI 4) and signals or abstract sockets to
processes outside the run (ABI 6). On a kernel without Landlock none of this holds, and the tier's
warning says so.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os

# the read-only part of the host a program may see (besides the interpreter's own prefix)
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/dev", "/proc")

# Runs as: python -I -S -B -c BOOT STATUS_FD ABI SCRATCH READ_PATHS_JSON PROGRAM ARGV…
# On any failure it exits 125 before writing the start marker, so the parent sees a sandbox failure
# (never a program result); the marker fd is closed before exec, out of the program's reach.
BOOT = r'''
import ctypes, json, os, stat, struct, sys
st, abi, scratch, reads, prog = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4]), sys.argv[5:]
L = ctypes.c_long
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = L
def fail(why):
    os.write(2, ("rlenv-sandbox: cannot confine the program: %s (errno %d)\n" % (why, ctypes.get_errno())).encode())
    os._exit(125)
if libc.prctl(38, L(1), L(0), L(0), L(0)) != 0:  # PR_SET_NO_NEW_PRIVS, required by landlock_restrict_self
    fail("no_new_privs")
if abi > 0:
    fs = (1 << 13) - 1 | (1 << 13 if abi >= 2 else 0) | (1 << 14 if abi >= 3 else 0) | (1 << 15 if abi >= 5 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    attr = ctypes.create_string_buffer(struct.pack("=QQQ", fs, 3 if abi >= 4 else 0, 3 if abi >= 6 else 0)[:size], size)
    rs = libc.syscall(L(444), attr, L(size), L(0))
    if rs < 0:
        fail("landlock_create_ruleset")
    on_files = 1 | 2 | 4 | (1 << 14 if abi >= 3 else 0) | (1 << 15 if abi >= 5 else 0)
    def allow(path, access):
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            access &= on_files
        rule = ctypes.create_string_buffer(struct.pack("=Qi", access & fs, fd), 12)
        ok = libc.syscall(L(445), L(rs), L(1), rule, L(0)) == 0
        os.close(fd)
        if not ok:
            fail("landlock_add_rule " + path)
    for p in reads:
        allow(p, 1 | 4 | 8)  # execute, read files, read dirs
    allow("/dev/null", 2 | 4 | (1 << 14 if abi >= 3 else 0))
    allow(scratch, fs)
    if libc.syscall(L(446), L(rs), L(0)) != 0:
        fail("landlock_restrict_self")
    os.close(rs)
if st >= 0:
    os.write(st, b'"started"')
    os.close(st)
os.execv(prog[0], prog)
'''

START_MARKER = b'"started"'


@functools.lru_cache(maxsize=1)
def abi() -> int:
    """The Landlock ABI version this kernel offers; 0 when it has none (or it is disabled)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        v = libc.syscall(ctypes.c_long(444), None, ctypes.c_long(0), ctypes.c_long(1))  # LANDLOCK_CREATE_RULESET_VERSION
    except (OSError, AttributeError):
        return 0
    return max(int(v), 0)


@functools.lru_cache(maxsize=16)
def read_paths(python: str) -> tuple:
    """What the program may read: the system directories and the interpreter's prefix."""
    prefix = os.path.dirname(os.path.dirname(os.path.realpath(python)))
    return tuple(p for p in (*_SYSTEM_DIRS, prefix) if os.path.exists(p))


def boot_argv(python: str, status_fd: int, scratch: str) -> list:
    """The boot program's command line; the program's own argv follows it."""
    return [python, "-I", "-S", "-B", "-c", BOOT, str(status_fd), str(abi()), scratch,
            json.dumps(list(read_paths(python)))]


def describe() -> str:
    """What the fence does on this kernel, in words (for the weak tier's warning)."""
    v = abi()
    if v == 0:
        return ("this kernel has no Landlock, so the program can read and write whatever its uid may "
                "(with a dedicated uid as root: every world-writable directory such as /tmp)")
    extra = (", no TCP" if v >= 4 else "") + (", no signals to processes outside the run" if v >= 6 else "")
    return (f"Landlock ABI {v} confines its writes to its scratch dir and its reads to the system "
            f"directories{extra}")
