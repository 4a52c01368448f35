"""`Server()` forks its local workers when it is called from the main thread of a single-threaded process,
and those workers behave as exec'd ones for the caller: right results, none of the caller's signal or
logging set-up, and no life beyond the caller's. Each test runs a script in a fresh process (the test
process has pytest-xdist's threads, so its own servers exec their workers)."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import textwrap
from pathlib import Path

TIMEOUT = 30.0


def run_to_end(run_script, source: str) -> dict:  # type: ignore[no-untyped-def]
    """Run `source` to its end; returns the JSON of its last stdout line."""
    proc = run_script(textwrap.dedent(source))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_server_of_a_fresh_script_forks_its_workers_and_answers_right(run_script):
    out = run_to_end(
        run_script,
        """
        import json, ppft_client

        def square(x):
            return x * x

        with ppft_client.Server(2) as server:
            methods = sorted(server._scheduler.pool.start_methods().values())
            values = [job() for job in [server.submit(square, (i,)) for i in range(300)]]
        print(json.dumps({"methods": methods, "values": values}))
        """,
    )
    assert out["methods"] == ["fork", "fork"]
    assert out["values"] == [i * i for i in range(300)]


def test_server_made_off_the_main_thread_execs_and_outlives_that_thread(run_script):
    out = run_to_end(
        run_script,
        """
        import json, os, threading, ppft_client

        made = []
        thread = threading.Thread(target=lambda: made.append(ppft_client.Server(1)))
        thread.start()
        thread.join(30)
        server = made[0]
        pid = server.submit(os.getpid)()  # the I/O thread started the worker meanwhile
        methods = list(server._scheduler.pool.start_methods().values())
        print(json.dumps({"methods": methods, "alive": pid in server._scheduler.pool.pids}))
        server.destroy()
        """,
    )
    assert out == {"methods": ["exec"], "alive": True}


def test_restart_true_execs_every_worker(run_script):
    out = run_to_end(
        run_script,
        """
        import json, os, ppft_client

        with ppft_client.Server(1, restart=True) as server:
            pool = server._scheduler.pool
            why = pool.why_exec()
            pids, methods = [], set()
            for _ in range(3):
                pids.append(server.submit(os.getpid)())
                methods.update(pool.start_methods().values())  # the worker started for the next job
        print(json.dumps({"why": why, "methods": sorted(methods), "fresh": len(set(pids)) == 3}))
        """,
    )
    assert "restart=True" in out["why"]
    assert out["methods"] == ["exec"]
    assert out["fresh"]


def test_callers_signal_handler_does_not_run_in_forked_workers(run_script, tmp_path: Path):
    marker = tmp_path / "handler-ran"
    out = run_to_end(
        run_script,
        f"""
        import json, os, signal, ppft_client

        def handler(signum, frame):
            with open({str(marker)!r}, "a") as f:
                f.write(f"{{os.getpid()}}\\n")

        signal.signal(signal.SIGTERM, handler)
        server = ppft_client.Server(2)
        methods = sorted(server._scheduler.pool.start_methods().values())
        assert server.submit(abs, (-3,))() == 3
        pids = list(server._scheduler.pool.pids)
        server.destroy()  # SIGTERMs the workers
        print(json.dumps({{"methods": methods, "pids": pids}}))
        """,
    )
    assert out["methods"] == ["fork", "fork"]
    assert not marker.exists(), f"the caller's SIGTERM handler ran in worker(s) {marker.read_text().split()}"


def test_callers_log_handlers_never_write_into_a_forked_workers_files(run_script, tmp_path: Path):
    """The caller's FileHandler holds descriptor N; a job whose own file gets number N in the worker, then
    logs, must find only what it wrote there (a handler inherited by the fork would write into it)."""
    log_file = tmp_path / "caller.log"
    out = run_to_end(
        run_script,
        f"""
        import json, logging, os, ppft_client

        spacers = [open(os.devnull) for _ in range(8)]  # the log file gets a number a job's file can reuse
        logging.basicConfig(filename={str(log_file)!r}, level=logging.INFO)
        for f in spacers:
            f.close()
        logging.getLogger("caller").info("from the caller")
        handler_fd = logging.getLogger().handlers[0].stream.fileno()

        def log_into_own_file(fd_wanted, path):
            import logging, os
            files = []
            while not files or files[-1].fileno() < fd_wanted:
                files.append(open(path + str(len(files)), "w"))
            logging.getLogger("job").warning("from the job")
            for f in files:
                f.close()
            return files[-1].name, open(files[-1].name).read()

        with ppft_client.Server(1) as server:
            methods = list(server._scheduler.pool.start_methods().values())
            name, content = server.submit(log_into_own_file, (handler_fd, {str(tmp_path / "job-")!r}))()
        print(json.dumps({{"methods": methods, "content": content}}))
        """,
    )
    assert out == {"methods": ["fork"], "content": ""}
    text = log_file.read_text()
    assert "from the caller" in text
    assert "from the job" not in text  # the worker's records go to its own stderr, as an exec'd worker's


def test_callers_open_file_fails_loudly_in_a_forked_worker_and_spares_the_jobs_files(
    run_script, tmp_path: Path
):
    """A module the caller imported holds an open file (descriptor N) that a forked worker inherits as an
    object: writing through it there raises, and never lands in the file the job itself opened as N."""
    (tmp_path / "tracer.py").write_text(
        "import os\n"
        "spacers = [open(os.devnull) for _ in range(8)]\n"
        f"TRACE = open({str(tmp_path / 'trace.txt')!r}, 'a')\n"
        "for f in spacers:\n"
        "    f.close()\n"
        "def trace(message):\n"
        "    TRACE.write(message)\n"
        "    TRACE.flush()\n"
    )
    out = run_to_end(
        run_script,
        f"""
        import json, ppft_client, tracer

        tracer.trace("from the caller\\n")

        def trace_beside_own_file(fd_wanted, path):
            import tracer
            files = []
            while not files or files[-1].fileno() < fd_wanted:
                files.append(open(path + str(len(files)), "w"))
            try:
                tracer.trace("from the job\\n")
                error = ""
            except OSError as exc:
                error = type(exc).__name__
            for f in files:
                f.close()
            return error, [open(f.name).read() for f in files]

        with ppft_client.Server(1) as server:
            methods = list(server._scheduler.pool.start_methods().values())
            job = server.submit(trace_beside_own_file, (tracer.TRACE.fileno(), {str(tmp_path / "job-")!r}))
            error, contents = job()
        print(json.dumps({{"methods": methods, "error": error, "contents": contents}}))
        """,
    )
    assert out["methods"] == ["fork"]
    assert out["error"] == "BrokenPipeError"
    assert not any(out["contents"]), out["contents"]
    assert (tmp_path / "trace.txt").read_text() == "from the caller\n"


_BUSY_FOREVER = """
import json, os, sys, time, ppft_client

def busy(flag):
    import os, time
    open(flag + str(os.getpid()), "w").close()
    time.sleep(3600)

server = ppft_client.Server(2)
pids = sorted(server._scheduler.pool.pids)
methods = sorted(server._scheduler.pool.start_methods().values())
jobs = [server.submit(busy, (FLAG,)) for _ in range(2)]
deadline = time.monotonic() + 30
while not all(os.path.exists(FLAG + str(pid)) for pid in pids) and time.monotonic() < deadline:
    time.sleep(0.01)
print(json.dumps({"methods": methods, "pids": pids}), flush=True)
sys.stdin.read()  # until the test SIGKILLs us
"""


def test_forked_workers_busy_in_jobs_die_with_a_sigkilled_caller(run_script, tmp_path: Path):
    """EOF cannot end a worker stuck in a job: PR_SET_PDEATHSIG, tied to the caller's main thread, must."""
    proc = run_script(f"FLAG = {str(tmp_path / 'started-')!r}\n" + _BUSY_FOREVER)
    assert select.select([proc.stdout], [], [], TIMEOUT)[0], proc.stderr.read()
    out = json.loads(proc.stdout.readline())
    assert out["methods"] == ["fork", "fork"]
    assert all((tmp_path / f"started-{pid}").exists() for pid in out["pids"])
    pidfds = [os.pidfd_open(pid) for pid in out["pids"]]
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(TIMEOUT)
        for pid, pidfd in zip(out["pids"], pidfds, strict=True):
            assert select.select([pidfd], [], [], TIMEOUT)[0], f"worker {pid} outlived its SIGKILLed caller"
    finally:
        for pidfd in pidfds:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            os.close(pidfd)
