"""One test per attack on the real sandbox (bubblewrap tier): the host and this process survive,
the attack achieves nothing, and nothing it does counts as a pass."""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time

import pytest
from sandbox_helpers import mem_available_mb, processes_with, require_bwrap

from rlenv import Task
from verifiers.code import CodeVerifier, Limits, run_python, run_tests

pytestmark = pytest.mark.timeout(120)

# One task per test format that no attack program solves: an attack that "passes" one broke out.
FUNC_TASK = Task("Write double(x).", answer=["assert double(2) == 4", "assert double(-3) == -6"], id="double")
STDIO_TASK = Task("Print the sum.", answer=[{"input": "2 3\n", "output": "5\n"}], id="sum")
CHECK_TASK = Task("Write double(x).", id="check", info={"entry_point": "double"}, answer=(
    "import random\n\ndef reference(x):\n    return 2 * x\n\ndef check(candidate):\n"
    "    assert candidate(1) == 2\n    for _ in range(5):\n        x = random.randint(1, 99)\n"
    "        assert candidate(x) == reference(x)\n        assert candidate(x) > 0 and isinstance(candidate(x), int)\n"))
CALL_TASK = Task("Write double(x).", id="apps", answer='{"fn_name": "double", "inputs": [[2], [true]], "outputs": [[4], [2]]}')
ALL_TASKS = (FUNC_TASK, STDIO_TASK, CHECK_TASK, CALL_TASK)


@pytest.fixture(autouse=True)
def _real_sandbox():
    require_bwrap()


def test_the_attacked_tasks_are_solvable():
    v = CodeVerifier(mode="fraction")
    double = "```python\ndef double(x):\n    return 2 * x\n```"
    assert [v.score(double, t).reward for t in (FUNC_TASK, CHECK_TASK, CALL_TASK)] == [1.0, 1.0, 1.0]
    assert v.score("```python\nprint(sum(map(int, input().split())))\n```", STDIO_TASK).reward == 1.0


def no_pass(source: str, tasks=(FUNC_TASK, STDIO_TASK)) -> None:
    """The program, run as a solution to each task, earns nothing."""
    v = CodeVerifier(mode="fraction", limits=Limits(timeout=1.5, memory_mb=256))
    for task in tasks:
        r = v.score(f"```python\n{source}\n```", task)
        assert r.reward == 0.0 and not r.failed, (task.id, r)


def fenced(marker: str, body: str) -> str:
    """A program whose command line carries ``marker`` (so its leftovers can be found) then ``body``."""
    return f"MARKER = {marker!r}\n{body}"


def test_tcp_connect_to_a_port_opened_on_loopback():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    port = srv.getsockname()[1]
    got, done = [], threading.Event()

    def accept():
        while not done.is_set():
            try:
                got.append(srv.accept())
            except socket.timeout:
                pass

    t = threading.Thread(target=accept)
    t.start()
    src = f"""
import socket
for host in ("127.0.0.1", "localhost", "::1", socket.gethostname()):
    try:
        socket.create_connection((host, {port}), timeout=1).sendall(b"x")
        print("CONNECTED", host)
    except Exception as e:
        print("blocked", host, type(e).__name__)
"""
    r = run_python(src, timeout=5)
    time.sleep(0.3)  # a connection that got through would be accepted by now
    done.set()
    t.join()
    srv.close()
    assert r.status == "ok" and "CONNECTED" not in r.stdout, r
    assert got == []
    no_pass(src)


def test_dns_lookup_and_udp_to_a_resolver():
    src = """
import socket
for name in ("example.com", "pypi.org", "localhost"):
    try:
        print("RESOLVED", name, socket.getaddrinfo(name, 443)[0][4])
    except Exception as e:
        print("no dns", name, type(e).__name__)
try:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"\\x00" * 12, ("8.8.8.8", 53))
    print("SENT")
except OSError as e:
    print("no udp", e.errno)
"""
    r = run_python(src, timeout=5)
    assert r.status == "ok", r
    # only the loopback of its own (empty) network namespace may resolve, from /etc/hosts-less glibc
    assert "RESOLVED example.com" not in r.stdout and "RESOLVED pypi.org" not in r.stdout
    assert "SENT" not in r.stdout
    no_pass(src)


def test_write_outside_scratch(tmp_path):
    targets = [str(tmp_path / "canary"), "/work/main/PWNED", "/etc/PWNED", "/root/PWNED", "/usr/PWNED",
               "/PWNED", os.path.join(os.getcwd(), "PWNED")]
    src = f"""
import os
for p in {targets!r}:
    try:
        os.makedirs(os.path.dirname(p), exist_ok=True)
        open(p, "w").write("x")
        print("WROTE", p)
    except OSError as e:
        print("denied", p, e.errno)
open("scratch.txt", "w").write("fine")  # the scratch dir is writable
print("SCRATCH", open("/tmp/scratch.txt").read())
"""
    r = run_python(src, timeout=5)
    assert r.status == "ok" and "SCRATCH fine" in r.stdout, r
    for p in targets:
        assert not os.path.exists(p), p
    no_pass(src)


def test_read_the_parents_secret_environment(monkeypatch):
    secret = secrets.token_hex(16)
    monkeypatch.setenv("RLENV_TEST_SECRET_TOKEN", secret)
    src = f"""
import os
print(dict(os.environ))
for p in ("/proc/self/environ", "/proc/1/environ", "/proc/{os.getpid()}/environ", "/proc/{os.getppid()}/environ"):
    try:
        print(p, open(p, "rb").read())
    except OSError as e:
        print("denied", p, e.errno)
"""
    r = run_python(src, timeout=5)
    assert r.status == "ok", r
    assert secret not in r.stdout and "RLENV_TEST_SECRET_TOKEN" not in r.stdout
    no_pass(src)


def test_kill_the_parent():
    src = f"""
import os, signal
for pid in (os.getppid(), {os.getpid()}, {os.getppid()}, 1):
    try:
        os.kill(pid, signal.SIGKILL)
        print("sent", pid)
    except OSError as e:
        print("denied", pid, e.errno)
"""
    r = run_python(src, timeout=5)
    assert r.status in ("ok", "killed", "error"), r  # its own namespace's init may take it down with it
    os.kill(os.getpid(), 0)  # still here
    no_pass(src)


def test_bounded_fork_bomb_is_stopped_and_cleaned_up():
    marker = secrets.token_hex(8)
    src = fenced(marker, """
import os, time
n = 0
try:
    for _ in range(500):
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        n += 1
    print("FORKED ALL", n)
except OSError:
    print("stopped at", n)
""")
    r = run_python(src, limits=Limits(timeout=5, max_processes=16))
    assert "stopped at" in r.stdout and "FORKED ALL" not in r.stdout, r
    assert int(r.stdout.split()[-1]) <= 16
    assert r.status == "ok"  # not "timeout": the sleeping children did not hold the run open
    assert processes_with(marker) == []
    no_pass(src)


def test_fifty_gigabyte_allocation():
    before = mem_available_mb()
    src = "x = bytearray(50 * 1024 ** 3)\nprint('ALLOCATED')"
    r = run_python(src, timeout=5, memory_mb=256)
    assert r.status == "memory" and "ALLOCATED" not in r.stdout, r
    assert mem_available_mb() > before - 2048  # loose: other processes share this machine
    no_pass(src)


def test_growing_allocation_hits_the_memory_limit():
    src = "x = []\nwhile True:\n    x.append(' ' * 10_000_000)"
    r = run_python(src, timeout=10, memory_mb=256)
    assert r.status == "memory", r


def test_infinite_loop():
    src = "while True:\n    pass"
    r = run_python(src, timeout=1)
    assert r.status == "timeout" and r.wall_time < 1 + 2, r  # the limit, plus killing and reaping
    no_pass(src)


def test_setsid_daemon_does_not_outlive_the_run():
    marker = secrets.token_hex(8)
    src = fenced(marker, """
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.closerange(0, 10)
        time.sleep(120)
    os._exit(0)
print("daemonised")
""")
    r = run_python(src, timeout=5)
    assert r.status == "ok", r  # not "timeout": the daemon did not hold the run open
    deadline = time.monotonic() + 2
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_with(marker) == []
    no_pass(src)


def test_one_gigabyte_stdout_flood():
    src = "import sys\nchunk = 'x' * 65536\nfor _ in range(16384):\n    sys.stdout.write(chunk)"
    cap = 1 << 20
    r = run_python(src, limits=Limits(timeout=20, max_output_bytes=cap))
    assert r.status == "killed" and r.truncated and "output limit" in r.reason, r
    assert len(r.stdout) <= cap
    no_pass(src)


def test_segfault_through_ctypes():
    src = "import ctypes\nctypes.string_at(0)"
    r = run_python(src, timeout=5)
    assert r.status == "killed" and "SIGSEGV" in r.reason, r
    no_pass(src)


# --- fake-pass tricks: each must earn nothing, in every test format -----------------------------


@pytest.mark.parametrize("trick", [
    # exit(0) before the asserts could run, or during a call
    "import sys\nsys.exit(0)",
    "import os\nos._exit(0)",
    "def double(x):\n    import os\n    os._exit(0)",
    "def double(x):\n    raise SystemExit(0)",
    # an answer that equals everything, or is true, or claims to be an int
    "class Any:\n    def __eq__(self, other): return True\n    __hash__ = None\ndef double(x):\n    return Any()",
    "class Int(int):\n    def __eq__(self, other): return True\ndef double(x):\n    return Int(0)",
    "class Yes:\n    def __bool__(self): return True\n    def __eq__(self, o): return True\n"
    "    __class__ = int\ndef double(x):\n    return Yes()",
    # patching the test machinery: unittest, AssertionError, builtins, the harness it runs in
    "import builtins, unittest\nunittest.TestCase.assertEqual = lambda *a, **k: None\n"
    "builtins.AssertionError = type('Nope', (Exception,), {})\ndef double(x):\n    return 0",
    "import builtins\nbuiltins.isinstance = lambda *a: True\nbuiltins.bool = lambda *a: True\n"
    "builtins.abs = lambda *a: 0\ndef double(x):\n    return 0",
    "import __main__, sys\nfor name in dir(__main__):\n    if 'ok' in name or 'fail' in name or name.startswith('_rlenv'):\n"
    "        setattr(__main__, name, lambda *a, **k: None)\nsys.modules['random'] = None\n"
    "def reference(x):\n    return 0\ndef check(candidate):\n    pass\ndef double(x):\n    return 0",
    # output its judges cannot parse (json raises RecursionError): still a 0, never a masked sample
    "import json, os\nfor fd in range(64):\n    try:\n        os.write(fd, b'[' * 300000 + b'\\n')\n"
    "    except OSError:\n        pass\njson.dumps = lambda *a, **k: '[' * 300000\ndef double(x):\n    return 0",
    # claiming success on stdout / stderr
    "import sys\nprint('PASSED')\nprint('All tests passed', file=sys.stderr)\nprint('5')\nsys.exit(0)"
    "\ndef double(x):\n    return None",
])
def test_fake_pass_tricks(trick):
    no_pass(trick, ALL_TASKS)


def test_the_tests_and_expected_values_are_out_of_reach():
    # the solution looks everywhere it can for the test code (a unique token in it) and for a way
    # to the judge; it finds neither, and its forged "passed" records land nowhere that counts
    token = secrets.token_hex(8)
    task = Task("Write double(x).", id="hidden", info={"entry_point": "double"},
                answer=f"def check(candidate):\n    assert candidate(21) == int('{token}', 16) * 0 + 42\n")
    probe = f"""
import glob, json, os
found = []
for path in glob.glob('/proc/*/cmdline') + glob.glob('/proc/*/environ') + glob.glob('/proc/*/fd/*') + glob.glob('/tmp/*'):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        data = os.read(fd, 1 << 20)
        os.close(fd)
    except OSError:
        continue
    if b'{token}' in data:
        found.append(path)
print('FOUND' if found else 'NOT FOUND', found, flush=True)  # flushed: the sandbox may be ended right after the calls
for fd in range(64):
    for i in range(3):
        try:
            os.write(fd, (json.dumps({{"a": i, "ok": True}}) + "\\n").encode())
            os.write(fd, (json.dumps({{"done": True}}) + "\\n").encode())
        except OSError:
            pass
def double(x):
    return 0
"""
    rep = run_tests(probe, task.answer, "double", limits=Limits(timeout=5))
    assert rep.passed == 0 and "NOT FOUND []" in rep.runs[0].stdout, (rep.outcomes, rep.runs[0].stdout)
    no_pass(probe, (CHECK_TASK, CALL_TASK, FUNC_TASK))
    assert CodeVerifier().score(f"```python\n{probe}\n```", task).reward == 0.0


def test_forged_result_records_with_the_real_nonce():
    # The harness's nonce is readable from inside; forging records with it still needs the expected
    # values, which never enter the sandbox.
    trick = """
import json, os, sys
nonce = open('/proc/self/cmdline', 'rb').read().split(b'\\0')[-2].decode()
for fd in range(3, 64):
    for i in range(4):
        try:
            os.write(fd, (json.dumps({"n": nonce, "i": i, "v": [True]}) + "\\n").encode())
        except OSError:
            pass
def double(x):
    return None
"""
    no_pass(trick)
