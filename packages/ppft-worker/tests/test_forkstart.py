"""A pool's first workers are forked when the process has exactly the threads its owner vouched for, and a
forked worker behaves as an exec'd one: no inherited descriptor, no user `__main__`, its own random state,
none of the parent's unflushed output, and it dies with its parent.

Each test drives a `WorkerPool` in a fresh Python process (the pytest-xdist process has threads of its own,
which is exactly when a pool must not fork): `HARNESS` below, then the test's lines, which print one JSON
line for the test to check.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

TIMEOUT = 30.0

HARNESS = """
import hashlib, itertools, json, os, pickle, sys, threading, time
from collections import deque
from ppft_protocol import FunctionBody, Job, function_digest
from ppft_worker.runtime.loop import Loop
from ppft_worker.pool import WorkerPool

TIMEOUT = 30.0


def body(source, name="f"):
    return FunctionBody(function_digest(name, (source,), (), b""), name, (source,))


class T:
    def __init__(self, job_id, fn, args):
        self.wire = Job(job_id, fn.digest, pickle.dumps(args))
        self.body = fn
        self.attempts = 0
        self.solo = False

    def claim(self):
        return True


class Harness:
    def __init__(self, size, fork_threads=1, **kwargs):
        self.loop = Loop()
        self.queue = deque()
        self.results = {}
        self.ids = itertools.count(1)
        self.pool = WorkerPool(self.loop, size, on_results=self.done, on_requeue=self.requeue,
                               fork_threads=fork_threads, **kwargs)
        self.loop.on_idle = lambda: self.pool.dispatch(self.queue)

    def done(self, pairs):
        for task, result in pairs:
            self.results[task.wire.job_id] = result

    def requeue(self, tasks):
        self.queue.extendleft(reversed(tasks))

    def until(self, predicate, what):
        deadline = time.monotonic() + TIMEOUT
        while not predicate():
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out waiting for {what}")
            self.loop.run_once(0.05)

    def ready(self):
        self.until(lambda: len(self.pool._workers) == self.pool.size and all(
            w.ready for w in self.pool._workers), "every worker to be ready")

    def submit(self, fn, args_list):
        tasks = [T(next(self.ids), fn, args) for args in args_list]
        self.queue.extend(tasks)
        return tasks

    def values(self, tasks):
        self.until(lambda: all(t.wire.job_id in self.results for t in tasks), "results")
        out = []
        for t in tasks:
            r = self.results[t.wire.job_id]
            if not r.ok:
                raise SystemExit(f"job failed: {r.error_type}: {r.error_message}")
            out.append(pickle.loads(r.value))
        return out

    def run(self, fn, args_list):
        return self.values(self.submit(fn, args_list))

    def close(self):
        self.pool.close()
        self.loop.close()


def emit(obj):
    print(json.dumps(obj), flush=True)


PLUS_ONE = body("def f(x):\\n    return x + 1\\n")
"""


def run_driver(tmp_path: Path, code: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run HARNESS + `code` in a fresh process; returns the JSON it printed last."""
    script = tmp_path / "driver.py"
    script.write_text(HARNESS + textwrap.dedent(code))
    full_env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    full_env.pop("PPFT_START", None)
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=TIMEOUT * 2,
        check=False,
    )
    assert proc.returncode == 0, f"driver failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_first_workers_of_a_single_threaded_process_are_forked(tmp_path: Path) -> None:
    out = run_driver(
        tmp_path,
        """
        h = Harness(2)
        h.pool.start()
        methods = sorted(h.pool.start_methods().values())
        emit({"methods": methods, "values": h.run(PLUS_ONE, [(i,) for i in range(200)])})
        h.close()
        """,
    )
    assert out["methods"] == ["fork", "fork"]
    assert out["values"] == [i + 1 for i in range(200)]


def test_pool_execs_when_another_thread_is_alive(tmp_path: Path) -> None:
    out = run_driver(
        tmp_path,
        """
        stop = threading.Event()
        other = threading.Thread(target=stop.wait)
        other.start()
        h = Harness(2)
        h.pool.start()
        methods = sorted(h.pool.start_methods().values())
        emit({"methods": methods, "why": h.pool.why_exec(), "values": h.run(PLUS_ONE, [(1,), (2,)])})
        stop.set()
        other.join()
        h.close()
        """,
    )
    assert out["methods"] == ["exec", "exec"]
    assert "2 Python thread(s)" in out["why"]
    assert out["values"] == [2, 3]


def test_start_env_exec_forces_exec(tmp_path: Path) -> None:
    out = run_driver(
        tmp_path,
        """
        h = Harness(2)
        h.pool.start()
        emit({"methods": sorted(h.pool.start_methods().values()), "values": h.run(PLUS_ONE, [(1,)])})
        h.close()
        """,
        env={"PPFT_START": "exec"},
    )
    assert out["methods"] == ["exec", "exec"]
    assert out["values"] == [2]


def test_pool_of_a_large_process_execs(tmp_path: Path) -> None:
    out = run_driver(
        tmp_path,
        """
        import ppft_worker.pool.forkstart as forkstart
        forkstart.FORK_MAX_RSS = 1 << 20  # any Python process is larger: as if it held gigabytes
        h = Harness(2)
        h.pool.start()
        emit({"methods": sorted(h.pool.start_methods().values()), "why": h.pool.why_exec(),
              "values": h.run(PLUS_ONE, [(1,)])})
        h.close()
        """,
    )
    assert out["methods"] == ["exec", "exec"]
    assert "resident memory" in out["why"]
    assert out["values"] == [2]


def test_pool_without_fork_threads_execs(tmp_path: Path) -> None:
    out = run_driver(
        tmp_path,
        """
        h = Harness(1, fork_threads=None)
        h.pool.start()
        emit({"methods": list(h.pool.start_methods().values())})
        h.close()
        """,
    )
    assert out["methods"] == ["exec"]


def test_replacement_of_a_killed_forked_worker_is_execed_and_its_job_reruns(tmp_path: Path) -> None:
    out = run_driver(
        tmp_path,
        f"""
        KILL_ONCE = body(
            "def f(flag):\\n"
            "    import os, signal\\n"
            "    if not os.path.exists(flag):\\n"
            "        open(flag, 'w').close()\\n"
            "        os.kill(os.getpid(), signal.SIGKILL)\\n"
            "    return os.getpid()\\n"
        )
        h = Harness(1)
        h.pool.start()
        before = h.pool.start_methods()
        [pid] = h.run(KILL_ONCE, [({str(tmp_path / "killed-once")!r},)])
        emit({{"before": list(before.values()), "first_pid": list(before)[0], "pid": pid,
              "after": h.pool.start_methods()}})
        h.close()
        """,
    )
    assert out["before"] == ["fork"]
    assert out["pid"] != out["first_pid"]  # the job ran again, on the replacement
    assert out["after"] == {str(out["pid"]): "exec"}


def test_forked_worker_holds_no_descriptor_but_its_own(tmp_path: Path) -> None:
    out = run_driver(
        tmp_path,
        """
        import socket
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def target(fd, pid=None):
            return os.readlink(f"/proc/{pid or 'self'}/fd/{fd}")

        h = Harness(3)
        h.pool.start()
        h.ready()
        own = {w.pid: sorted([target(w.rfd), target(w.wfd)]) for w in h.pool._workers}
        parent = {target(fd) for fd in (h.loop._wake_r, h.loop._wake_w, listener.fileno())}
        parent |= {t for ts in own.values() for t in ts}
        held = {}
        for w in h.pool._workers:
            fds = os.listdir(f"/proc/{w.pid}/fd")
            held[w.pid] = sorted(target(fd, w.pid) for fd in fds if int(fd) > 2)
        emit({"methods": sorted(h.pool.start_methods().values()), "own": own, "held": held,
              "parent": sorted(parent), "stdio": [target(fd) for fd in (0, 1, 2)]})
        h.close()
        """,
    )
    assert out["methods"] == ["fork"] * 3
    for pid, held in out["held"].items():
        # beyond fds 0-2, a worker holds its two channel ends and nothing else of its parent's
        foreign = set(held) & set(out["parent"]) - set(out["own"][pid])
        assert not foreign, f"worker {pid} holds {foreign}"
        assert sorted(set(held) & set(out["parent"])) == out["own"][pid]
        assert all(t.startswith(("pipe:", "/dev/null")) or t in out["stdio"] for t in held), held


def test_user_main_globals_are_not_the_workers_main(tmp_path: Path) -> None:
    # The job finds the `__main__` its worker restores after each job (a local of the job runner's frame):
    # in a forked worker, as in an exec'd one, an empty module, not the caller's script.
    out = run_driver(
        tmp_path,
        """
        USER_MARKER = "the caller's script globals"
        PEEK = body(
            "def f():\\n"
            "    import sys\\n"
            "    frame = sys._getframe()\\n"
            "    while 'saved_main' not in frame.f_locals:\\n"
            "        frame = frame.f_back\\n"
            "    main = frame.f_locals['saved_main']\\n"
            "    return main.__name__, sorted(vars(main)), sys.argv\\n"
        )
        h = Harness(1)
        h.pool.start()
        emit({"methods": list(h.pool.start_methods().values()), "seen": h.run(PEEK, [()])[0]})
        h.close()
        """,
    )
    assert out["methods"] == ["fork"]
    name, names, argv = out["seen"]
    assert name == "__main__"
    assert "USER_MARKER" not in names and "Harness" not in names
    assert argv == ["-c"]


def test_forked_workers_draw_different_random_numbers(tmp_path: Path) -> None:
    out = run_driver(
        tmp_path,
        """
        import random
        random.random()  # the parent's generator exists and has state the children inherit
        DRAW = body("def f():\\n    import os, random\\n    return os.getpid(), random.random()\\n")
        h = Harness(2)
        h.pool.start()
        h.ready()
        draws = h.run(DRAW, [(), ()])
        emit({"methods": sorted(h.pool.start_methods().values()), "draws": draws,
              "parent": random.random()})
        h.close()
        """,
    )
    assert out["methods"] == ["fork", "fork"]
    (pid_a, a), (pid_b, b) = out["draws"]
    assert pid_a != pid_b
    assert len({a, b, out["parent"]}) == 3


def test_unflushed_parent_stdout_is_written_once(tmp_path: Path) -> None:
    script = tmp_path / "driver.py"
    script.write_text(
        HARNESS
        + textwrap.dedent(
            """
            sys.stdout.write("UNFLUSHED-MARKER")  # no newline, stdout is a pipe: it sits in the buffer
            h = Harness(2)
            h.pool.start()
            methods = sorted(h.pool.start_methods().values())
            h.run(PLUS_ONE, [(i,) for i in range(20)])
            h.close()
            sys.stderr.write(" ".join(methods))
            """
        )
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    env.pop("PPFT_START", None)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.endswith("fork fork"), proc.stderr
    assert proc.stdout == "UNFLUSHED-MARKER"
    assert proc.stderr == "fork fork"  # a worker's fd 1 is its stderr: no copy there either


def test_forked_worker_never_runs_its_parents_code(tmp_path: Path) -> None:
    script = tmp_path / "driver.py"
    script.write_text(
        HARNESS
        + textwrap.dedent(
            """
            import atexit
            atexit.register(lambda: os.write(2, b"atexit in %d\\n" % os.getpid()))
            h = Harness(2)
            h.pool.start()
            methods = sorted(h.pool.start_methods().values())
            h.run(PLUS_ONE, [(i,) for i in range(20)])
            h.pool.resize(0)  # EOF on their channels: the workers end by themselves, not by SIGTERM
            h.until(lambda: all(p.poll() is not None for p in h.pool._dying), "the workers to exit")
            h.close()
            os.write(2, f"after close in {os.getpid()}: {' '.join(methods)}\\n".encode())
            """
        )
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    env.pop("PPFT_START", None)
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT)
    assert proc.returncode == 0, err
    assert err.splitlines() == [f"after close in {proc.pid}: fork fork", f"atexit in {proc.pid}"]


_ORPHAN = """
SLEEP = body(
    "def f(flag):\\n"
    "    import os, time\\n"
    "    open(flag + str(os.getpid()), 'w').close()\\n"
    "    time.sleep(3600)\\n"
)
h = Harness(2)
h.pool.start()
h.ready()
h.submit(SLEEP, [(FLAG,), (FLAG,)])
pids = sorted(h.pool.start_methods())
h.until(lambda: all(os.path.exists(FLAG + str(pid)) for pid in pids), "both jobs to start")
emit({"methods": sorted(h.pool.start_methods().values()), "pids": pids})
sys.stdin.read()  # until the test SIGKILLs us
"""


def test_forked_worker_dies_when_its_parent_is_sigkilled(tmp_path: Path) -> None:
    """Each worker is busy in an endless job, so EOF cannot end it: PR_SET_PDEATHSIG must."""
    script = tmp_path / "parent.py"
    script.write_text(HARNESS + f"FLAG = {str(tmp_path / 'started-')!r}\n" + _ORPHAN)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    env.pop("PPFT_START", None)
    parent = subprocess.Popen(
        [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    pidfds: list[int] = []
    try:
        assert parent.stdout is not None
        assert select.select([parent.stdout], [], [], TIMEOUT)[0], "the parent did not report its workers"
        out = json.loads(parent.stdout.readline())
        assert out["methods"] == ["fork", "fork"]
        pidfds = [os.pidfd_open(pid) for pid in out["pids"]]
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(TIMEOUT)
        for pid, pidfd in zip(out["pids"], pidfds, strict=True):
            assert select.select([pidfd], [], [], TIMEOUT)[0], f"worker {pid} outlived its SIGKILLed parent"
    finally:
        if parent.poll() is None:
            os.kill(parent.pid, signal.SIGKILL)
            parent.wait(TIMEOUT)
        for pidfd in pidfds:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            os.close(pidfd)
        for f in (parent.stdin, parent.stdout):
            if f is not None:
                f.close()


def test_forked_child_that_fails_to_prepare_is_replaced_by_an_execed_worker(tmp_path: Path) -> None:
    script = tmp_path / "driver.py"
    script.write_text(
        HARNESS
        + textwrap.dedent(
            """
            import ppft_worker.pool.forkstart as forkstart

            def broken(*args):
                raise RuntimeError("preparation broke on purpose")

            forkstart._fresh_main = broken  # the forked child calls it before it serves
            h = Harness(1)
            h.pool.start()
            values = h.run(PLUS_ONE, [(41,)])
            emit({"values": values, "methods": list(h.pool.start_methods().values())})
            h.close()
            """
        )
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    env.pop("PPFT_START", None)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"values": [42], "methods": ["exec"]}
    assert "forked worker failed" in proc.stderr
    assert "RuntimeError: preparation broke on purpose" in proc.stderr
