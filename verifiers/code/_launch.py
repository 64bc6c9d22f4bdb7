"""How a sandboxed run is started: the tier, the interpreter, the uid, and the exec chain.

The run is started as one chain of small programs, each exec'ing the next, so this process never
forks a copy of itself (``subprocess`` then uses ``vfork``; a trainer holding gigabytes would
otherwise pay hundreds of milliseconds per ``fork``):

    [sh: join the run's cgroups] → setpriv (uid, parent-death signal) → bwrap (namespaces,
    read-only root, tmpfs scratch) → sh (PID 1: sets the rlimits, reaps) → python

The weak rlimits tier (only on explicit opt-in, see :func:`require_isolation`) runs
``prlimit → unshare --net → setpriv → python (Landlock boot, see _landlock.py) → python`` instead. ``prlimit``,
``setpriv`` and ``unshare`` are util-linux (in every Debian/Ubuntu base system).
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from typing import Optional, Sequence

from . import _landlock
from ..base import PreflightError

_lock = threading.Lock()
_tier: Optional[str] = None
_why_not = ""
_weak_checked = False
NOGROUP = 65534
WEAK_ENV = "RLENV_ALLOW_WEAK_SANDBOX"
log = logging.getLogger("verifiers.code")


class SandboxUnavailable(PreflightError):
    """No isolation this run accepts works here. The message names the fix: install bubblewrap, or
    opt in to the weak tier explicitly (a parameter and an environment variable)."""


def _world_executable(path: str) -> bool:
    """True when an unprivileged uid can reach and run ``path`` (every parent dir o+x)."""
    path = os.path.realpath(path)
    try:
        if not os.stat(path).st_mode & 0o001:
            return False
        d = os.path.dirname(path)
        while d != "/":
            if not os.stat(d).st_mode & 0o001:
                return False
            d = os.path.dirname(d)
    except OSError:
        return False
    return True


def find_python() -> str:
    """The interpreter untrusted code runs with: ``$RLENV_SANDBOX_PYTHON``, else this process's own
    Python when other users can execute it, else a system ``python3`` (a venv under ``/root`` is
    mode 0700 and cannot be run by the sandbox's unprivileged uid)."""
    env = os.environ.get("RLENV_SANDBOX_PYTHON")
    if env:
        return env
    return _default_python(sys.executable, os.geteuid() == 0)


@functools.lru_cache(maxsize=None)
def _default_python(executable: str, root: bool) -> str:
    for c in [executable, "/usr/bin/python3", "/usr/local/bin/python3"]:
        if c and os.path.exists(c) and (not root or _world_executable(c)):
            return os.path.realpath(c)
    raise RuntimeError("verifiers.code: no Python interpreter the sandbox can run; install python3 "
                       "(`apt-get install python3`) or set RLENV_SANDBOX_PYTHON to a world-executable interpreter")


def tool(name: str) -> str:
    """The path of a helper program, or one clear error saying which package provides it."""
    path = _which(name)
    if not path:
        pkg = "bubblewrap" if name == "bwrap" else "util-linux"
        raise RuntimeError(f"verifiers.code: `{name}` is not installed; install it with `apt-get install {pkg}` "
                           "(see .ci/install-sandbox.sh)")
    return path


@functools.lru_cache(maxsize=None)
def _which(name: str) -> Optional[str]:
    if name == "bwrap":  # found on PATH like any command, so hiding it from PATH hides the tier
        return shutil.which("bwrap")
    return shutil.which(name, path="/usr/bin:/bin:/usr/sbin:/sbin:/usr/local/bin")


def sandbox_tier() -> str:
    """The strongest tier this machine offers: ``bwrap`` when bubblewrap works here, else
    ``rlimits`` — which runs untrusted code only when explicitly allowed (see
    :func:`require_isolation`). Probed once per process; ``RLENV_SANDBOX_TIER=rlimits`` hides
    bubblewrap (to try the refusal and the weak tier on a machine that has it)."""
    global _tier, _why_not
    with _lock:
        if _tier is None:
            if os.environ.get("RLENV_SANDBOX_TIER") == "rlimits":
                _tier, _why_not = "rlimits", "RLENV_SANDBOX_TIER=rlimits hides bubblewrap"
            else:
                _tier = "bwrap" if _bwrap_works() else "rlimits"
        return _tier


def why_not_bwrap() -> str:
    """Why the bwrap tier is not used here (empty when it is)."""
    sandbox_tier()
    return _why_not


def weak_allowed(allow_weak: bool) -> bool:
    """True when the caller asked for the weak tier AND the environment variable agrees."""
    return bool(allow_weak) and os.environ.get(WEAK_ENV, "") == "1"


def require_isolation(allow_weak: bool = False) -> str:
    """The tier untrusted code will run in here, or :class:`SandboxUnavailable` (one clear error
    naming the fix) when none this caller accepts works.

    ``bwrap`` whenever bubblewrap works. Otherwise the weak ``rlimits`` tier only when asked for twice:
    ``allow_weak=True`` (a parameter, e.g. ``CodeVerifier(allow_weak_sandbox=True)``) AND the
    environment variable ``RLENV_ALLOW_WEAK_SANDBOX=1``; its first use logs a warning saying what it
    does not protect.
    """
    if sandbox_tier() == "bwrap":
        return "bwrap"
    if not weak_allowed(allow_weak):
        missing = [m for m, ok in (("the parameter allow_weak_sandbox=True", allow_weak),
                                   (f"the environment variable {WEAK_ENV}=1", os.environ.get(WEAK_ENV, "") == "1"))
                   if not ok]
        raise SandboxUnavailable(
            f"verifiers.code refuses to run untrusted code: no isolating sandbox works here ({_why_not}). "
            "Fix: install bubblewrap — `sudo bash .ci/install-sandbox.sh` (or `apt-get install bubblewrap`). "
            "For development only, the weaker rlimits tier runs if you ask for it with both "
            f"allow_weak_sandbox=True (a code env's kwarg, or Limits(allow_weak_sandbox=True)) and {WEAK_ENV}=1 "
            f"(missing: {' and '.join(missing)}); see docs/sandbox.md")
    _check_weak_tier()
    return "rlimits"


def _check_weak_tier() -> None:
    """Start the weak tier once (it must work too, or refuse) and log, once, what it does not protect."""
    global _weak_checked
    with _lock:
        if _weak_checked:
            return
        scratch = tempfile.mkdtemp(prefix="rlenv-probe-")
        slot = UidSlot()
        try:
            if slot.uid is not None:
                os.chown(scratch, slot.uid, NOGROUP)
            cmd = chain("rlimits", find_python(), ["-c", "pass"], limits=None, uid=slot.uid, cgroup_procs=(),
                        scratch=scratch)
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=scratch)
            err = "" if p.returncode == 0 else p.stderr.strip()[-300:] or f"exit code {p.returncode}"
        except (OSError, RuntimeError, subprocess.SubprocessError) as e:
            err = str(e)
        finally:
            slot.release()
            shutil.rmtree(scratch, ignore_errors=True)
        if err:
            raise SandboxUnavailable(f"verifiers.code: the weak rlimits tier was allowed but cannot start here "
                                     f"either ({err}); install bubblewrap: `sudo bash .ci/install-sandbox.sh`")
        text = (f"verifiers.code: untrusted code runs in the WEAK rlimits tier, as explicitly allowed "
                f"(allow_weak_sandbox=True and {WEAK_ENV}=1), because {_why_not}. It has no PID, mount or IPC "
                f"namespace; {_landlock.describe()}. Use it for development only; install bubblewrap "
                "(.ci/install-sandbox.sh) for training on untrusted code. See docs/sandbox.md.")
        log.warning(text)
        _weak_checked = True


def forget_probe() -> None:
    """Probe the tiers again on next use (after installing bubblewrap, or in tests that hide it)."""
    global _tier, _why_not, _weak_checked
    with _lock:
        _tier, _why_not, _weak_checked = None, "", False
    _which.cache_clear()


def _bwrap_works() -> bool:
    global _why_not
    if not _which("bwrap"):
        _why_not = "bubblewrap (`bwrap`) is not installed or not on PATH"
        return False
    slot = UidSlot()
    try:
        cmd = chain("bwrap", find_python(), ["-c", "pass"], limits=None, uid=slot.uid, cgroup_procs=())
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        if p.returncode != 0:  # e.g. unprivileged user namespaces are disabled
            _why_not = f"bubblewrap is installed but fails here: {p.stderr.strip()[-300:]}"
        return p.returncode == 0
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        _why_not = f"bubblewrap cannot be started: {e}"
        return False
    finally:
        slot.release()


@functools.lru_cache(maxsize=16)
def _root_binds(python: str) -> tuple:
    """Read-only binds of the system: /usr, the merged-/usr symlinks, the interpreter's prefix."""
    args = ["--ro-bind", "/usr", "/usr"]
    for d in ("/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"):
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
    for f in ("/etc/ld.so.cache", "/etc/localtime"):
        if os.path.exists(f):
            args += ["--ro-bind", f, f]
    prefix = os.path.dirname(os.path.dirname(os.path.realpath(python)))
    if prefix not in ("/", "/usr") and not prefix.startswith("/usr/"):
        args += ["--ro-bind", prefix, prefix]
    return tuple(args)


# Joins the cgroups named by the first $1 arguments, then execs the rest.
_JOIN_SH = 'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n-1)); done; exec "$@"'


# ``ulimit`` spellings of the shells /bin/sh may be: (flag for RLIMIT_NPROC, bytes per -f unit)
_SHELLS = {"dash": ("-p", 512), "bash": ("-u", 1024)}


@functools.lru_cache(maxsize=1)
def _shell_name() -> str:
    return os.path.basename(os.path.realpath("/bin/sh"))


def _ulimit_script(limits) -> Optional[str]:
    """The PID-1 shell script that sets the rlimits and runs the program (None: unknown /bin/sh).

    Set inside the namespace, ``RLIMIT_NPROC`` counts only the run's own processes (the kernel
    counts per user namespace), so it is exact for root and unprivileged users alike. If a limit
    cannot be set the program does not run: exit 125, a plain failure — never a pass.
    """
    flavour = _SHELLS.get(_shell_name())
    if flavour is None:
        return None
    nproc_flag, fsize_unit = flavour
    cpu = int(-(-float(limits.cpu_seconds or limits.timeout) // 1))
    steps = [f"ulimit -v {int(limits.memory_mb) * 1024}", f"ulimit -St {cpu}", f"ulimit -Ht {cpu + 1}",
             f"ulimit -f {(int(limits.max_file_mb) << 20) // fsize_unit}", f"ulimit -n {int(limits.max_open_files)}",
             "ulimit -c 0", f"ulimit {nproc_flag} {int(limits.max_processes) + 1}"]
    return (" && ".join(steps) + ' || { echo "rlenv-sandbox: cannot set resource limits" >&2; exit 125; }; '
            '"$@"; exit $?')


def _prlimit(limits, uid: Optional[int]) -> list:
    """rlimits through util-linux ``prlimit`` (the rlimits tier, or an unknown /bin/sh)."""
    mem, fsize = int(limits.memory_mb) << 20, int(limits.max_file_mb) << 20
    cpu = int(-(-float(limits.cpu_seconds or limits.timeout) // 1))
    cmd = [tool("prlimit"), f"--as={mem}", f"--cpu={cpu}:{cpu + 1}", f"--fsize={fsize}",
           f"--nofile={limits.max_open_files}", "--core=0"]
    if uid is not None:  # a dedicated uid: the run's own budget, +1 for bwrap itself
        cmd.append(f"--nproc={limits.max_processes + 1}")
    elif os.geteuid() != 0:  # our own uid: the count is shared with everything else we run
        cmd.append(f"--nproc={user_tasks(os.getuid()) + limits.max_processes + 2}")
    return cmd


def chain(tier: str, python: str, argv: Sequence[str], limits, uid: Optional[int], cgroup_procs: Sequence[str],
          status_fd: Optional[int] = None, scratch: Optional[str] = None) -> list:
    """The full command line of one run (see the module docstring). The rlimits tier needs the run's
    ``scratch`` dir: its Landlock fence lets the program write only there."""
    cmd: list = []
    if cgroup_procs:
        cmd += ["/bin/sh", "-c", _JOIN_SH, "sh", str(len(cgroup_procs)), *cgroup_procs]
    script = _ulimit_script(limits) if (limits is not None and tier == "bwrap") else None
    if limits is not None and script is None:
        cmd += _prlimit(limits, uid)
    if tier == "rlimits":
        cmd += [tool("unshare"), "--net"] if os.geteuid() == 0 else [tool("unshare"), "--user", "--net"]
    cmd += [tool("setpriv")]
    if uid is not None:
        cmd += [f"--reuid={uid}", f"--regid={NOGROUP}", "--clear-groups"]
    cmd += ["--pdeathsig=KILL", "--"]  # the chain dies with this process
    if tier == "bwrap":
        size = (int(limits.max_file_mb) << 20) if limits is not None else 1 << 20
        cmd += [tool("bwrap"), "--unshare-all", "--die-with-parent", "--new-session", "--as-pid-1",
                "--hostname", "sandbox", *_root_binds(python), "--proc", "/proc", "--dev", "/dev",
                "--size", str(size), "--tmpfs", "/tmp", "--chdir", "/tmp"]
        if status_fd is not None:
            cmd += ["--json-status-fd", str(status_fd)]
        # A shell is PID 1 of the namespace and the program its child: bwrap's own init would be
        # orphaned (its monitor exits on an eventfd without reaping it), and a program that is PID 1
        # itself ignores SIGXCPU and even the RLIMIT_CPU SIGKILL. The "; exit" keeps sh from exec'ing.
        cmd += ["/bin/sh", "-c", script or '"$@"; exit $?', "sh"]
    elif tier == "rlimits":
        if scratch is None:
            raise RuntimeError("verifiers.code: the rlimits tier needs the run's scratch dir")
        cmd += _landlock.boot_argv(python, -1 if status_fd is None else status_fd, scratch)
    return cmd + [python, *argv]


def user_tasks(uid: int) -> int:
    """How many tasks (threads included, as RLIMIT_NPROC counts them) ``uid`` runs right now."""
    n = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    n += len(os.listdir(f"/proc/{entry.name}/task"))
            except OSError:  # the process ended while we looked
                pass
    return n


class UidSlot:
    """A dedicated unprivileged uid for one run (root only; None otherwise).

    ``RLIMIT_NPROC`` counts per uid and root is exempt from it, so each concurrent run gets its own
    uid: a fork bomb is stopped at its own budget without touching another run's. Uids are reused
    oldest-first, so the short-lived zombies of a finished run never count against the next one.
    """

    _base = 2_000_000 + (os.getpid() % 4096) * 1024  # spread by pid: two processes rarely share
    _free: collections.deque = collections.deque()
    _next = 0
    _guard = threading.Lock()

    def __init__(self):
        self.uid: Optional[int] = None
        if os.geteuid() != 0:
            return
        with UidSlot._guard:
            if UidSlot._next < 1024 or not UidSlot._free:
                self.uid = UidSlot._base + UidSlot._next
                UidSlot._next += 1
            else:
                self.uid = UidSlot._free.popleft()

    def release(self) -> None:
        if self.uid is not None:
            with UidSlot._guard:
                UidSlot._free.append(self.uid)
            self.uid = None


def kill_uid(uid: int) -> None:
    """Kill every process of a slot uid (the rlimits tier's tree kill, no PID namespace there): as
    that uid, ``kill -9 -1`` reaches exactly the processes the uid owns."""
    subprocess.run([tool("setpriv"), f"--reuid={uid}", f"--regid={NOGROUP}", "--clear-groups", "--",
                    "/bin/sh", "-c", "kill -9 -1"], capture_output=True, timeout=10)
