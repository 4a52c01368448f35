"""No worker process is ever left behind, and local workers see what the caller sees."""

from __future__ import annotations

import os
import signal
import textwrap

SCRIPT_PRELUDE = """
import os, sys, time
import ppft_client

def pid(_):
    return os.getpid()

server = ppft_client.Server(2)
pids = {server.submit(pid, (i,)).result(timeout=60) for i in range(50)}
pids = sorted(pids | set(server._scheduler.pool.pids))
print(" ".join(map(str, pids)), flush=True)
"""


def read_pids(proc):
    line = proc.stdout.readline()
    assert line.strip(), proc.stderr.read()
    return [int(p) for p in line.split()]


def test_no_worker_left_after_destroy(make_server, pid_alive, wait_until):
    server = make_server(2)
    pool = server._scheduler.pool
    wait_until(lambda: len(pool.pids) == 2, 10, "two workers")
    pids = list(pool.pids)
    server.destroy()
    for pid in pids:
        wait_until(lambda pid=pid: not pid_alive(pid), 10, f"worker {pid} to exit")


def test_no_worker_left_after_interpreter_exit(run_script, pid_alive, wait_until):
    proc = run_script(SCRIPT_PRELUDE + "sys.exit(0)\n")
    pids = read_pids(proc)
    assert proc.wait(30) == 0
    for pid in pids:
        wait_until(lambda pid=pid: not pid_alive(pid), 10, f"worker {pid} to exit")


def test_no_worker_left_after_parent_is_sigkilled(run_script, pid_alive, wait_until):
    proc = run_script(SCRIPT_PRELUDE + "sys.stdin.read()\n")
    pids = read_pids(proc)
    assert all(pid_alive(pid) for pid in pids)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    for pid in pids:
        wait_until(lambda pid=pid: not pid_alive(pid), 10, f"orphaned worker {pid} to exit")


def test_module_next_to_the_script_imports_in_a_job(run_script, tmp_path):
    (tmp_path / "neighbour.py").write_text("def triple(x):\n    return 3 * x\n")
    source = textwrap.dedent(
        """
        import ppft_client, neighbour

        def use(x):
            import neighbour
            return neighbour.triple(x), __import__("os").getcwd()

        with ppft_client.Server(1) as server:
            print(server.submit(use, (5,)).result(timeout=60))
        """
    )
    proc = run_script(source)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.strip() == repr((15, str(tmp_path)))


def test_workers_outlive_the_thread_that_created_the_server(make_server):
    import threading

    holder = []

    def create():
        server = make_server(1)
        holder.append((server, server.submit(os.getpid).result(timeout=30)))  # the worker is up and tied

    thread = threading.Thread(target=create)
    thread.start()
    thread.join(30)
    server, started_pid = holder[0]
    assert server.submit(os.getpid).result(timeout=30) == started_pid  # not killed with its creator thread
