"""Run one untrusted Python program in a fresh, locked-down process: :func:`run_python`.

The sandbox, in the strongest tier this machine allows (see docs/sandbox.md for the threat model):

* ``bwrap`` — bubblewrap puts the program in new user, PID, network, IPC, UTS and cgroup
  namespaces: no network interface but a dead loopback, a read-only view of ``/usr`` only, a
  size-capped tmpfs at ``/tmp`` as its scratch and working directory, its own ``/proc``. The
  program is PID 1 of its namespace: when it ends, the kernel kills every process left in it, so
  no daemon survives.
* ``rlimits`` — runs only when explicitly allowed (``Limits(allow_weak_sandbox=True)`` AND
  ``RLENV_ALLOW_WEAK_SANDBOX=1``); without bubblewrap and that opt-in every run raises
  :class:`SandboxUnavailable` naming the fix. The same resource limits, a dedicated uid (as root),
  a fresh network namespace and a Landlock fence (writes only in its scratch dir, reads only in the
  system directories), but no PID or mount namespace; leftovers are killed by uid and session.

Both tiers add: rlimits (address space, CPU seconds, processes, file size, open files, no core
dumps), a scrubbed environment, stdout/stderr read with a hard cap (the run is killed past it),
a wall-clock deadline, and — when running as root — a dedicated unprivileged uid per concurrent slot
(root is exempt from ``RLIMIT_NPROC``) and per-run ``pids``/``memory`` cgroups.
"""

from __future__ import annotations

import dataclasses
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Optional, Sequence

from . import _cgroup
from ._landlock import START_MARKER
from ._launch import (NOGROUP, SandboxUnavailable, UidSlot, chain, find_python, kill_uid, require_isolation,
                      sandbox_tier)

__all__ = ["ExecResult", "Limits", "SandboxUnavailable", "find_python", "require_isolation",
           "run_argv", "run_python", "sandbox_tier"]

OK, ERROR, TIMEOUT, MEMORY, KILLED = "ok", "error", "timeout", "memory", "killed"
_MAX_SOURCE = 120_000  # one argv string may hold 128 KiB on Linux


@dataclasses.dataclass
class Limits:
    """Resource limits of one run. ``cpu_seconds`` defaults to the wall ``timeout`` (rounded up).

    ``allow_weak_sandbox=True`` accepts the weak rlimits tier where bubblewrap does not work — it
    takes effect only when ``RLENV_ALLOW_WEAK_SANDBOX=1`` is set too (see docs/sandbox.md).
    """

    timeout: float = 10.0
    memory_mb: int = 512
    cpu_seconds: Optional[float] = None
    max_processes: int = 32
    max_file_mb: int = 16  # the largest file, and the size of the scratch tmpfs
    max_output_bytes: int = 1 << 20  # per stream (stdout, stderr, the result channel)
    max_open_files: int = 256
    allow_weak_sandbox: bool = False

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


_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8"}


def run_argv(argv: Sequence[str], stdin: str | bytes = "", limits: Optional[Limits] = None,
             channel: bool = False, python: Optional[str] = None, pass_fds: Sequence[int] = ()) -> ExecResult:
    """Run ``python <argv…>`` in the sandbox (the lower-level door :func:`run_python` and the test
    runner use). With ``channel=True`` the child gets a result pipe whose fd number replaces the
    literal ``{fd}`` in ``argv``; what it writes there comes back in ``ExecResult.channel``.
    ``pass_fds`` are handed to the child as they are (pipes to another sandbox) and closed here once
    it has started or failed to.

    Raises :class:`SandboxUnavailable` when no isolation this caller accepts works here.
    """
    limits = limits or Limits()
    own = list(pass_fds)
    try:
        tier = require_isolation(limits.allow_weak_sandbox)
    except SandboxUnavailable:
        _close(own)
        raise
    python = python or find_python()
    if not os.access(python, os.X_OK):
        _close(own)
        return ExecResult(KILLED, reason=f"sandbox failed to start: interpreter {python} is not executable",
                          tier=tier, sandbox_error=True)
    group, slot, scratch, fds, proc = None, UidSlot(), None, {}, None
    try:
        if _cgroup.available():
            group = _cgroup.new_group(limits.max_processes + 2,  # + bwrap, + the spawning thread
                                      (int(limits.memory_mb) + int(limits.max_file_mb) + 64) << 20)
        if channel:
            fds["channel"] = os.pipe()
            argv = [a.replace("{fd}", str(fds["channel"][1])) for a in argv]
        fds["status"] = os.pipe()  # bwrap reports the exit there; the weak tier's boot its start
        cwd = None
        if tier == "rlimits":  # no private tmpfs: a fresh directory owned by the run's uid
            scratch = tempfile.mkdtemp(prefix="rlenv-sbx-")
            if slot.uid is not None:
                os.chown(scratch, slot.uid, NOGROUP)
            cwd = scratch
        env = dict(_ENV, HOME=scratch or "/tmp", TMPDIR=scratch or "/tmp")
        per_thread = group is not None and group.per_thread
        cmd = chain(tier, python, argv, limits, slot.uid, group.procs_paths if group and not per_thread else (),
                    fds["status"][1], scratch)
        start = time.monotonic()
        def spawn() -> subprocess.Popen:
            return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    env=env, cwd=cwd, close_fds=True,
                                    pass_fds=tuple(w for _, w in fds.values()) + tuple(own), start_new_session=True)
        proc = group.spawn(spawn) if per_thread else spawn()
        _close(own)  # the child has its copies; ours would keep the other side from seeing it end
        own = []
        for name, (r, w) in fds.items():
            os.close(w)
            fds[name] = (r, -1)
        data = stdin.encode() if isinstance(stdin, str) else bytes(stdin)
        res, bwrap_status = _collect(proc, data, limits, {name: r for name, (r, _) in fds.items()}, start)
        res.tier = tier
        _finish(proc, tier, slot, group, res, float(limits.cpu_seconds or limits.timeout), bwrap_status)
        res.wall_time = time.monotonic() - start
        return res
    except (OSError, RuntimeError) as e:  # cgroup, pipe or exec failure, a missing tool: not the program's fault
        if proc is not None and proc.returncode is None:
            _kill(proc)
            try:
                os.waitpid(proc.pid, 0)
            except ChildProcessError:
                pass
        return ExecResult(KILLED, reason=f"sandbox failed to start: {e}", tier=tier, sandbox_error=True)
    finally:
        _close(own)
        for r, w in fds.values():
            for fd in (r, w):
                if fd >= 0:
                    os.close(fd)
        if group is not None:
            group.destroy()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        slot.release()


def _close(fds: Sequence[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _collect(proc: subprocess.Popen, data: bytes, limits: Limits, extra: dict, start: float) -> tuple:
    """Feed stdin and read stdout, stderr and the extra pipes (``channel``, ``status``) with a cap
    each, until they all close, a cap is hit or the deadline passes."""
    cap = int(limits.max_output_bytes)
    bufs = {"stdout": bytearray(), "stderr": bytearray(), "channel": bytearray(), "status": bytearray()}
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, "stdout")
    sel.register(proc.stderr, selectors.EVENT_READ, "stderr")
    for name, fd in extra.items():
        sel.register(fd, selectors.EVENT_READ, name)
    if data:
        os.set_blocking(proc.stdin.fileno(), False)
        sel.register(proc.stdin, selectors.EVENT_WRITE, "stdin")
    else:
        proc.stdin.close()
    deadline = start + float(limits.timeout)
    why, status, pos, exited_at = "", None, 0, None
    while any(k.data != "stdin" for k in sel.get_map().values()):
        now = time.monotonic()
        if now >= deadline:
            status, why = TIMEOUT, f"wall-clock limit of {limits.timeout:g} s"
            break
        # a leftover process may hold the pipes open after the program ended (rlimits tier)
        if exited_at is None and _exited(proc):
            exited_at = now
        if exited_at is not None and now - exited_at > 0.2:
            break
        for key, _ in sel.select(min(deadline - now, 0.2)):
            name = key.data
            if name == "stdin":
                try:
                    pos += os.write(key.fd, data[pos:pos + 65536])
                except OSError:  # the program closed its stdin or exited
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
    if status:
        _kill(proc)
    res = ExecResult(status or OK, reason=why, truncated=(status == KILLED))
    res.stdout = bufs["stdout"].decode("utf-8", "replace")
    res.stderr = bufs["stderr"].decode("utf-8", "replace")
    res.channel = bytes(bufs["channel"])
    return res, bytes(bufs["status"])


def _exited(proc: subprocess.Popen) -> bool:
    """Has the process ended? Peeks without reaping it, so :func:`_reap` still gets its rusage."""
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.kill(proc.pid, signal.SIGKILL)  # bwrap dies, and --die-with-parent takes the sandboxed PID namespace with it
    except ProcessLookupError:
        pass


def _reap(proc: subprocess.Popen, grace: float = 5.0) -> tuple[int, float]:
    """Wait for the chain's process (killing it after ``grace`` s) and return its exit status and
    the CPU seconds it and its reaped descendants used (``wait4``'s rusage)."""
    deadline = time.monotonic() + grace
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            _kill(proc)
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.001)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime


def _finish(proc: subprocess.Popen, tier: str, slot: UidSlot, group, res: ExecResult, cpu_limit: float,
            bwrap_status: bytes) -> None:
    """Reap the process, kill whatever of its tree is left, and classify how it ended."""
    code, cpu = _reap(proc)
    for f in (proc.stdout, proc.stderr, proc.stdin):
        try:
            f.close()
        except OSError:
            pass
    if tier == "rlimits":  # no PID namespace: kill the session and everything the slot uid owns
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if slot.uid is not None:
            kill_uid(slot.uid)
    # bwrap reports a signal death as 128 + signal; so does setpriv/prlimit's exec'd program
    sig = -code if code < 0 else (code - 128 if 128 < code < 128 + 65 else 0)
    res.exit_code = 128 + sig if sig else code
    if res.status != OK:
        return
    if (tier == "bwrap" and b'"exit-code"' not in bwrap_status) or (tier == "rlimits" and START_MARKER not in bwrap_status):
        # bwrap never reported the program's exit (or the weak tier's boot never started it): the
        # sandbox itself failed to start
        res.status, res.sandbox_error = KILLED, True
        res.reason = "sandbox failed to start: " + (_tail(res.stderr, 3) or f"exit code {code}")
        return
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= cpu_limit - 0.05):
        res.status, res.reason = TIMEOUT, "CPU time limit"
    elif (sig == signal.SIGKILL and group is not None and group.hit_memory_limit()) or (code != 0 and _memory_error(res.stderr)):
        res.status, res.reason = MEMORY, "memory limit"
    elif sig:
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        res.status, res.reason = KILLED, f"killed by signal {name}"
    elif code != 0:
        res.status, res.reason = ERROR, f"exit code {code}"


def _tail(text: str, n: int) -> str:
    return "\n".join(text.strip().split("\n")[-n:])


def _memory_error(stderr: str) -> bool:
    tail = stderr.rstrip().rsplit("\n", 1)[-1]
    return tail.startswith("MemoryError") or "Cannot allocate memory" in tail


def run_python(source: str, stdin: str | bytes = "", timeout: float = 10.0, memory_mb: int = 512,
               limits: Optional[Limits] = None, allow_weak_sandbox: bool = False) -> ExecResult:
    """Run ``source`` as a Python program in a fresh sandboxed process and return what happened.

    Args:
        source: the program text (at most 120 kB).
        stdin: what the program reads on standard input.
        timeout: wall-clock seconds; the CPU limit is the same number rounded up.
        memory_mb: the address-space (and, where cgroups work, the total memory) limit.
        limits: full :class:`Limits`; when given, ``timeout`` and ``memory_mb`` are ignored.
        allow_weak_sandbox: accept the weak rlimits tier where bubblewrap does not work; it takes
            effect only with ``RLENV_ALLOW_WEAK_SANDBOX=1`` set too, and is logged.

    Never raises on anything the program does; the status says how it ended. Raises
    :class:`SandboxUnavailable` (naming the fix) when no isolation it accepts works here — untrusted
    code is never run unisolated by default.
    """
    if not isinstance(source, str):
        raise TypeError(f"run_python: source must be a str, got {type(source).__name__}")
    limits = limits or Limits(timeout=timeout, memory_mb=memory_mb)
    if allow_weak_sandbox and not limits.allow_weak_sandbox:
        limits = dataclasses.replace(limits, allow_weak_sandbox=True)
    if len(source.encode("utf-8", "replace")) > _MAX_SOURCE:
        return ExecResult(ERROR, reason=f"source is larger than {_MAX_SOURCE} bytes; not run", exit_code=None)
    if "\x00" in source:
        return ExecResult(ERROR, reason="source contains a NUL byte; not run")
    return run_argv(["-I", "-S", "-B", "-c", source], stdin=stdin, limits=limits)
