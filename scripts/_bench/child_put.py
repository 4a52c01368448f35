"""The measuring side of issue 19's `put` scenario: one object shipped once, then many jobs that read it.

`python child_put.py classic put PARAMS_JSON OUT_FILE`, started by scripts/bench like child.py. Our ppft only
(`Server.put`). The client puts a numpy array (`size_mib` MiB), runs one job on it (the ref is then on every
node that ran it), then times `n` jobs given the ref against the same `n` jobs given a tiny tuple, the two
alternating for `rounds` rounds (best of each). On a ppserver it also reads how many bytes the ppserver
received on the client's connection (TCP_INFO's bytes_acked on the client's socket, Linux): the put should
cost one copy of the object, not one per job. Every value that comes back is checked.
"""

from __future__ import annotations

import json
import struct
import sys
import time
from typing import Any

from child import WORKERS, BenchValueError

__all__ = ["main"]

_TCP_INFO = 11  # socket.TCP_INFO on Linux
_BYTES_ACKED = 120  # offset of tcpi_bytes_acked (u64) in struct tcp_info
_TINY = tuple(range(8))


def pick(a: Any, k: int) -> int:
    return int(a[k % 8])


def _timed(server: Any, arg: Any, n: int) -> float:
    submit = server.submit
    start = time.perf_counter()
    jobs = [submit(pick, (arg, k)) for k in range(n)]
    got = [job() for job in jobs]
    seconds = time.perf_counter() - start
    if got != [k % 8 for k in range(n)]:
        raise BenchValueError(f"pick returned {got[:8]}... instead of 0..7 repeated")
    return seconds


def _bytes_acked(server: Any) -> int:
    """What the ppserver received on this client's connection (bytes the kernel saw it acknowledge)."""
    import socket

    node = server._scheduler.nodes[0]
    sock = node.link.stream.sock
    info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 256)
    return int(struct.unpack_from("=Q", info, _BYTES_ACKED)[0])


def scenario_put(backend: str, params: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    import ppft as pp

    remote = params.get("remote")
    server = pp.Server(0, ppservers=(remote,), secret=params["secret"]) if remote else pp.Server(WORKERS)
    try:
        size = params["size_mib"] << 20
        array = np.arange(size // 8, dtype=np.float64)
        for k in range(WORKERS * 4):  # every worker started, the function body everywhere
            server.submit(pick, (_TINY, k))()
        ref = server.put(array)
        start = time.perf_counter()
        firsts = [server.submit(pick, (ref, k)) for k in range(WORKERS * 4)]  # every worker holds it now
        if [job() for job in firsts] != [k % 8 for k in range(WORKERS * 4)]:
            raise BenchValueError("the first ref jobs did not read the array")
        first_s = time.perf_counter() - start
        n = params["n"]
        with_ref, with_tiny = [], []
        for _ in range(params["rounds"]):
            with_ref.append(_timed(server, ref, n))
            with_tiny.append(_timed(server, _TINY, n))
        result = {
            "ref_s": min(with_ref),
            "tiny_s": min(with_tiny),
            "ratio": min(with_ref) / min(with_tiny),
            "first_s": first_s,
            "ref_jobs_per_s": n / min(with_ref),
        }
        if remote:
            result["received_ratio"] = _bytes_acked(server) / size
        return result
    finally:
        server.destroy()


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[1] != "put" or argv[0] != "classic":
        raise SystemExit(f"usage: child_put.py classic put PARAMS_JSON OUT_FILE (got {argv!r})")
    result = scenario_put(argv[0], json.loads(argv[2]))
    result["python"] = sys.version.split()[0]
    with open(argv[3], "w", encoding="utf-8") as out:
        json.dump(result, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
