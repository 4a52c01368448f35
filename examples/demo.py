"""The README's demonstration: ppft's classic example on local workers, then the same jobs on a ppserver.

It starts a real ppserver on 127.0.0.1 (a subprocess, on a free port, with a random secret), connects the
same job server to it, runs the same jobs there, and prints ppft's statistics table with both nodes. The
ppserver is stopped by its PID whatever happens.
"""

import math
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time

import ppft as pp

INPUTS = (100000, 100100, 100200, 100300, 100400, 100500, 100600, 100700)
TINY_JOBS = 20000


def is_prime(n):
    """Trial division: deliberately pure-Python CPU work."""
    if n < 2:
        return False
    return all(n % d != 0 for d in range(2, int(n**0.5) + 1))


def sum_primes(n):
    """Sum of the primes below n (the classic ppft example)."""
    return sum(x for x in range(2, n) if is_prime(x))


def run_jobs(job_server, where):
    """The same jobs wherever the server sends them: the seed example, sum_primes, then many tiny jobs."""
    f1 = job_server.submit(math.sin, (math.pi / 2,), (), ("math",))
    f2 = job_server.submit(min, (3.2, 10.0, 7.5), (), ())
    f3 = job_server.submit(sum, ([1, 2, 3],), (), ())
    print(f"[{where}] sin(pi/2), min, sum -> {(f1(), f2(), f3())}")

    start = time.time()
    jobs = [(n, job_server.submit(sum_primes, (n,), (is_prime,))) for n in INPUTS]
    sums = [job() for _, job in jobs]
    print(f"[{where}] sum of primes below {INPUTS[0]} is {sums[0]}, ..., below {INPUTS[-1]} is {sums[-1]}")
    print(f"[{where}] {len(INPUTS)} sum_primes jobs in {time.time() - start:.2f} s")

    start = time.time()
    futures = [job_server.submit(pow, (x, 2)) for x in range(TINY_JOBS)]
    total = sum(f.result(timeout=60) for f in futures)
    print(f"[{where}] {TINY_JOBS:,} tiny jobs in {time.time() - start:.2f} s (sum of squares {total})")
    return sums, total


def free_port():
    """A TCP port nobody listens on right now (the kernel's pick for port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_ppserver(port, secret):
    """`ppserver -p PORT -i 127.0.0.1 -w 2 -s SECRET` as a subprocess, returned once it listens."""
    cmd = [sys.executable, "-m", "ppft_server", "-p", str(port), "-i", "127.0.0.1", "-w", "2", "-s", secret]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # ppserver logs one line once it listens, or one error line and exits
        if "listening on" in line:
            # from now on its log (warnings only) goes to our stderr, so its pipe never fills up
            threading.Thread(target=shutil.copyfileobj, args=(proc.stderr, sys.stderr), daemon=True).start()
            return proc
        print(line, end="", file=sys.stderr)
    proc.wait()
    raise SystemExit(f"ppserver did not start (exit status {proc.returncode})")


def stop_ppserver(proc):
    """SIGTERM by PID (a clean stop: workers stopped too), SIGKILL if it has not exited in 10 s."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main():
    secret = secrets.token_hex(16)
    with pp.Server(secret=secret) as job_server:
        print(f"ppft {pp.__version__}: {job_server.get_ncpus()} local workers")
        local = run_jobs(job_server, "local")

        port = free_port()
        ppserver = start_ppserver(port, secret)
        try:
            print(f"ppserver started on 127.0.0.1:{port} (pid {ppserver.pid}) with 2 workers")
            job_server.connect1("127.0.0.1", port)
            job_server.set_ncpus(0)  # no local workers from now on: every job goes to the ppserver
            remote = run_jobs(job_server, f"127.0.0.1:{port}")
            print("same results on both nodes:", remote == local)
            print("active nodes:", job_server.get_active_nodes())
            job_server.print_stats()
            job_server.destroy()  # before the ppserver stops, so that losing it is no news
        finally:
            stop_ppserver(ppserver)

    with pp.Executor(2) as ex:
        print("Executor.map:", list(ex.map(abs, [-1, -2, -3])))


if __name__ == "__main__":
    main()
