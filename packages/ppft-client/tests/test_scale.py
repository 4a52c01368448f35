"""Volume: many tiny jobs, and one very large result."""

from __future__ import annotations


def add_one(x):
    return x + 1


def big(n):
    return b"x" * n


def test_100000_tiny_jobs_complete(make_server):
    server = make_server(2)
    jobs = [server.submit(add_one, (i,)) for i in range(100_000)]
    assert sum(job.result(timeout=120) for job in jobs) == sum(range(1, 100_001))
    assert server.get_stats()["local"].njobs == 100_000


def test_256_mib_result(make_server):
    server = make_server(1)
    value = server.submit(big, (256 << 20,)).result(timeout=120)
    assert len(value) == 256 << 20 and value[:3] == b"xxx" and value[-1:] == b"x"
