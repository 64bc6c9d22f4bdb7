"""Run one untrusted Python program in a fresh, locked-down process: :func:`run_python`.

The sandbox, in the strongest tier this machine allows (see docs/sandbox.md for the threat model):

* ``bwrap`` — bubblewrap puts the program in new user, PID, network, IPC, UTS and cgroup
  namespaces: no network interface but a dead loopback, a read-only view of ``/usr`` only, a
  size-capped tmpfs at ``/tmp`` as its scratch and working directory, its own ``/proc``. When the
  program's first process ends, the PID namespace's init dies and the kernel kills every process
  left in it, so no daemon survives.
* ``rlimits`` — the fallback when bubblewrap is missing (a :class:`SandboxWarning` says so): the
  same resource limits and a dedicated uid, but the program sees the host's files and network.

Both tiers add: rlimits (address space, CPU seconds, processes, file size, open files, no core
dumps), a scrubbed environment, stdout/stderr read with a hard cap (the run is killed past it),
a wall-clock deadline, and — when running as root — a dedicated unprivileged uid per concurrent slot
(root is exempt from ``RLIMIT_NPROC``) and per-run ``pids``/``memory`` cgroups.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import os
import resource
import selectors
import shutil
import signal
import subprocess
import threading
import time
import warnings
from typing import Optional, Sequence

from . import _cgroup

OK, ERROR, TIMEOUT, MEMORY, KILLED = "ok", "error", "timeout", "memory", "killed"
_MAX_SOURCE = 120_000  # one argv string may hold 128 KiB on Linux


class SandboxWarning(RuntimeWarning):
    """The sandbox runs in a weaker tier than bubblewrap (printed once per process)."""


@dataclasses.dataclass
class Limits:
    """Resource limits of one run. ``cpu_seconds`` defaults to the wall ``timeout`` (rounded up)."""

    timeout: float = 10.0
    memory_mb: int = 512
    cpu_seconds: Optional[float] = None
    max_processes: int = 32
    max_file_mb: int = 16  # the largest file, and the size of the scratch tmpfs
    max_output_bytes: int = 1 << 20  # per stream (stdout, stderr, the result channel)
    max_open_files: int = 256

    def __post_init__(self):
        for name in ("timeout", "memory_mb", "max_processes", "max_file_mb", "max_output_bytes"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or v <= 0:
                raise ValueError(f"Limits.{name} must be a positive number, got {v!r}")


@dataclasses.dataclass
class ExecResult:
    """What one run did. The verdict on it is made by the caller, on this plain data.

    Attributes:
        status: ``ok`` (exit 0), ``error`` (non-zero exit, e.g. an exception), ``timeout`` (wall or
            CPU limit), ``memory`` (memory limit), ``killed`` (a signal: segfault, output cap, …).
        stdout, stderr: decoded output, each at most ``max_output_bytes``.
        exit_code: the exit status, or ``128 + signal`` when a signal ended it.
        wall_time: seconds from start to the end of the process tree.
        reason: why the run ended that way, in words (empty for a plain exit).
        truncated: True when an output stream hit its cap.
        tier: the sandbox tier that ran it (``bwrap`` or ``rlimits``).
        channel: bytes the trusted harness wrote on the result pipe (function tests).
        sandbox_error: True when the sandbox itself failed (not the program): an infrastructure
            failure the caller should not count as a wrong answer.
    """

    status: str
    stdout: str = ""
    stderr: str = ""
    exit_code: Optional[int] = None
    wall_time: float = 0.0
    reason: str = ""
    truncated: bool = False
    tier: str = ""
    channel: bytes = b""
    sandbox_error: bool = False

    @property
    def ok(self) -> bool:
        return self.status == OK


# ---------------------------------------------------------------------------------------------
# which tier, which interpreter


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
    import sys

    candidates = [os.path.realpath(sys.executable)] if os.geteuid() != 0 or _world_executable(sys.executable) else []
    candidates += ["/usr/bin/python3", "/usr/local/bin/python3"]
    for c in candidates:
        if c and os.path.exists(c) and (os.geteuid() != 0 or _world_executable(c)):
            return os.path.realpath(c)
    raise RuntimeError(
        "verifiers.code: no Python interpreter the sandbox can run; install python3 "
        "(`apt-get install python3`) or set RLENV_SANDBOX_PYTHON to a world-executable interpreter"
    )


_tier_lock = threading.Lock()
_tier: Optional[str] = None


def sandbox_tier() -> str:
    """``bwrap`` when bubblewrap works here, else ``rlimits`` (warns once). Probed once per process;
    set ``RLENV_SANDBOX_TIER=rlimits`` to force the fallback."""
    global _tier
    with _tier_lock:
        if _tier is None:
            forced = os.environ.get("RLENV_SANDBOX_TIER")
            if forced in ("bwrap", "rlimits"):
                _tier = forced
            else:
                _tier = "bwrap" if _bwrap_works() else "rlimits"
            if _tier != "bwrap":
                warnings.warn(
                    "verifiers.code: bubblewrap is not available, so untrusted code runs with rlimits only — "
                    "it can read host files and reach the network. Install it with "
                    "`apt-get install bubblewrap` (see .ci/install-sandbox.sh and docs/sandbox.md).",
                    SandboxWarning,
                    stacklevel=3,
                )
        return _tier


def _bwrap_works() -> bool:
    bwrap = shutil.which("bwrap")
    if not bwrap:
        return False
    slot = _Slot(None)
    try:
        cmd = [bwrap, "--unshare-all", "--die-with-parent", *_root_binds(find_python()), "--proc", "/proc", "true"]
        p = subprocess.run(cmd, capture_output=True, timeout=10, preexec_fn=slot.drop)
        return p.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        slot.release()


def _root_binds(python: str) -> list[str]:
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
    if not prefix.startswith("/usr"):
        args += ["--ro-bind", prefix, prefix]
    return args


# ---------------------------------------------------------------------------------------------
# the child side: limits, uid, cgroup — applied between fork and exec

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1
_CLONE_NEWUSER, _CLONE_NEWNET = 0x10000000, 0x40000000
# Dedicated uids for concurrent slots, spread by pid so two processes rarely share one.
_UID_BASE = 2_000_000 + (os.getpid() % 4096) * 1024
_uid_lock = threading.Lock()
_free_uids: list[int] = []
_next_uid = [0]


class _Slot:
    """One concurrent run's dedicated uid (root only): ``RLIMIT_NPROC`` counts per uid, so a fork
    bomb in one run cannot use up another's budget, and the uid owns nothing on the host."""

    def __init__(self, limits: Optional[Limits], tier: str = "bwrap", group=None):
        self.limits, self.tier, self.group = limits, tier, group
        self.uid = None
        if os.geteuid() == 0:
            with _uid_lock:
                if _free_uids:
                    self.uid = _free_uids.pop()
                else:
                    self.uid = _UID_BASE + _next_uid[0]
                    _next_uid[0] += 1

    def release(self) -> None:
        if self.uid is not None:
            with _uid_lock:
                _free_uids.append(self.uid)
            self.uid = None

    def drop(self) -> None:
        """preexec_fn: runs in the forked child just before exec (keep it to plain syscalls)."""
        lim = self.limits
        if self.group is not None:
            self.group.join()
        if lim is not None:
            mem = int(lim.memory_mb) << 20
            cpu = int(-(-float(lim.cpu_seconds or lim.timeout) // 1))
            fsize = int(lim.max_file_mb) << 20
            resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))  # SIGXCPU, then SIGKILL
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
            resource.setrlimit(resource.RLIMIT_NOFILE, (lim.max_open_files, lim.max_open_files))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            if self.uid is not None:
                # bwrap and its init take two of the processes
                resource.setrlimit(resource.RLIMIT_NPROC, (lim.max_processes + 2, lim.max_processes + 2))
        if self.tier == "rlimits":
            # no network: a fresh network namespace (needs root, or a user namespace too)
            flags = _CLONE_NEWNET if os.geteuid() == 0 else (_CLONE_NEWUSER | _CLONE_NEWNET)
            _libc.unshare(flags)
        if self.uid is not None:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(self.uid)
        # die with the parent (set after setuid: a credential change clears it)
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _kill_uid(uid: int) -> None:
    """Kill every process of a slot uid (the rlimits tier's tree kill): a child that becomes the
    uid sends SIGKILL to -1, i.e. to everything that uid may signal — only its own processes."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.setgid(65534)
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


# ---------------------------------------------------------------------------------------------
# the parent side


_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8"}


def _command(tier: str, python: str, argv: Sequence[str], limits: Limits) -> list[str]:
    if tier == "bwrap":
        return [
            shutil.which("bwrap") or "bwrap", "--unshare-all", "--die-with-parent", "--new-session",
            "--hostname", "sandbox", *_root_binds(python), "--proc", "/proc", "--dev", "/dev",
            "--size", str(int(limits.max_file_mb) << 20), "--tmpfs", "/tmp", "--chdir", "/tmp",
            python, *argv,
        ]
    return [python, *argv]


def run_argv(argv: Sequence[str], stdin: str | bytes = "", limits: Optional[Limits] = None,
             channel: bool = False, python: Optional[str] = None) -> ExecResult:
    """Run ``python <argv…>`` in the sandbox (the lower-level door :func:`run_python` and the test
    runner use). With ``channel=True`` the child gets a result pipe whose fd number replaces the
    literal ``{fd}`` in ``argv``; what it writes there comes back in ``ExecResult.channel``."""
    limits = limits or Limits()
    tier = sandbox_tier()
    python = python or find_python()
    group = _cgroup.RunGroup(limits.max_processes + 2, (int(limits.memory_mb) + int(limits.max_file_mb) + 64) << 20) \
        if _cgroup.available() else None
    slot = _Slot(limits, tier, group)
    scratch = None
    rfd = wfd = -1
    try:
        if channel:
            rfd, wfd = os.pipe()
            argv = [a.replace("{fd}", str(wfd)) for a in argv]
        cwd = None
        if tier == "rlimits":
            import tempfile

            scratch = tempfile.mkdtemp(prefix="rlenv-sbx-")
            if slot.uid is not None:
                os.chown(scratch, slot.uid, 65534)
            cwd = scratch
        env = dict(_ENV, HOME=scratch or "/tmp", TMPDIR=scratch or "/tmp")
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                _command(tier, python, argv, limits), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, env=env, cwd=cwd, preexec_fn=slot.drop, close_fds=True,
                pass_fds=(wfd,) if channel else (), start_new_session=(tier == "rlimits"),
            )
        except OSError as e:
            return ExecResult(KILLED, reason=f"sandbox failed to start: {e}", tier=tier, sandbox_error=True)
        if channel:
            os.close(wfd)
            wfd = -1
        data = stdin.encode() if isinstance(stdin, str) else bytes(stdin)
        res = _collect(proc, data, limits, rfd if channel else None, start)
        res.tier = tier
        _finish(proc, tier, slot, group, res)
        res.wall_time = time.monotonic() - start
        return res
    finally:
        for fd in (rfd, wfd):
            if fd >= 0:
                os.close(fd)
        if group is not None:
            group.destroy()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        slot.release()


def _collect(proc: subprocess.Popen, data: bytes, limits: Limits, rfd: Optional[int], start: float) -> ExecResult:
    """Feed stdin and read stdout/stderr/result pipe with caps until EOF, the cap or the deadline."""
    cap = int(limits.max_output_bytes)
    bufs = {"stdout": bytearray(), "stderr": bytearray(), "channel": bytearray()}
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, "stdout")
    sel.register(proc.stderr, selectors.EVENT_READ, "stderr")
    if rfd is not None:
        sel.register(rfd, selectors.EVENT_READ, "channel")
    if data:
        os.set_blocking(proc.stdin.fileno(), False)
        sel.register(proc.stdin, selectors.EVENT_WRITE, "stdin")
    else:
        proc.stdin.close()
    deadline = start + float(limits.timeout)
    why, status, pos, exited_at = "", None, 0, None
    while any(k.data != "stdin" for k in sel.get_map().values()):
        now = time.monotonic()
        left = deadline - now
        if left <= 0:
            status, why = TIMEOUT, f"wall-clock limit of {limits.timeout:g} s"
            break
        # a leftover process may hold the pipes open after the program ended (rlimits tier)
        if exited_at is None and proc.poll() is not None:
            exited_at = now
        if exited_at is not None and now - exited_at > 0.2:
            break
        for key, _ in sel.select(min(left, 0.5)):
            name = key.data
            if name == "stdin":
                try:
                    pos += os.write(key.fd, data[pos:pos + 65536])
                except (BrokenPipeError, OSError):
                    pos = len(data)
                if pos >= len(data):
                    sel.unregister(key.fileobj)
                    proc.stdin.close()
                continue
            chunk = os.read(key.fd, 65536)
            if not chunk:
                sel.unregister(key.fileobj)
                continue
            buf = bufs[name]
            buf += chunk
            if len(buf) > cap:
                del buf[cap:]
                status, why = KILLED, f"{name} exceeded the output limit of {cap} bytes"
                break
        if status:
            break
    sel.close()
    res = ExecResult(status or OK, reason=why, truncated=(status == KILLED))
    res.stdout = bufs["stdout"].decode("utf-8", "replace")
    res.stderr = bufs["stderr"].decode("utf-8", "replace")
    res.channel = bytes(bufs["channel"])
    if status:
        _kill(proc)
    return res


def _kill(proc: subprocess.Popen) -> None:
    try:
        proc.kill()  # bwrap's init has PDEATHSIG=SIGKILL, so the PID namespace goes with it
    except ProcessLookupError:
        pass


def _finish(proc: subprocess.Popen, tier: str, slot: _Slot, group, res: ExecResult) -> None:
    """Reap the process, kill whatever of its tree is left, and classify how it ended."""
    try:
        code = proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        _kill(proc)
        code = proc.wait()
    for f in (proc.stdout, proc.stderr, proc.stdin):
        try:
            f.close()
        except OSError:
            pass
    if tier == "rlimits":
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if slot.uid is not None:
            _kill_uid(slot.uid)
    sig = -code if code < 0 else (code - 128 if tier == "bwrap" and code > 128 else 0)
    res.exit_code = 128 + sig if sig else code
    if res.status != OK:
        return
    mem_hit = group is not None and group.hit_memory_limit()
    if sig == signal.SIGXCPU:
        res.status, res.reason = TIMEOUT, "CPU time limit"
    elif (sig == signal.SIGKILL and mem_hit) or (code != 0 and _memory_error(res.stderr)):
        res.status, res.reason = MEMORY, "memory limit"
    elif sig:
        res.status, res.reason = KILLED, f"killed by signal {signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else sig}"
    elif code != 0:
        res.status, res.reason = ERROR, f"exit code {code}"


def _memory_error(stderr: str) -> bool:
    tail = stderr.rstrip().rsplit("\n", 1)[-1]
    return tail.startswith("MemoryError") or "Cannot allocate memory" in tail


def run_python(source: str, stdin: str | bytes = "", timeout: float = 10.0, memory_mb: int = 512,
               limits: Optional[Limits] = None) -> ExecResult:
    """Run ``source`` as a Python program in a fresh sandboxed process and return what happened.

    Args:
        source: the program text (at most 120 kB).
        stdin: what the program reads on standard input.
        timeout: wall-clock seconds; the CPU limit is the same number rounded up.
        memory_mb: the address-space (and, where cgroups work, the total memory) limit.
        limits: full :class:`Limits`; when given, ``timeout`` and ``memory_mb`` are ignored.

    Never raises on anything the program does; the status says how it ended.
    """
    if not isinstance(source, str):
        raise TypeError(f"run_python: source must be a str, got {type(source).__name__}")
    limits = limits or Limits(timeout=timeout, memory_mb=memory_mb)
    if len(source.encode("utf-8", "replace")) > _MAX_SOURCE:
        return ExecResult(ERROR, reason=f"source is larger than {_MAX_SOURCE} bytes; not run", exit_code=None)
    if "\x00" in source:
        return ExecResult(ERROR, reason="source contains a NUL byte; not run")
    return run_argv(["-I", "-S", "-B", "-c", source], stdin=stdin, limits=limits)
