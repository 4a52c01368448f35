"""`put()` refs on direct worker links (docs/cluster.md, "Direct worker links"): against a real ppserver, a
job that uses a ref runs in one of the ppserver's direct workers, the ref's 16 MiB array received by the
ppserver once (on the client's connection to it, not per worker), and a released ref is refused as on the
ppserver's path: at submit by the client, and by the direct workers, which forget it."""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

import pytest

import ppft
from clusterlib import Cluster, wait_until

MiB = 1 << 20
_TCP_INFO = getattr(socket, "TCP_INFO", 11)
_BYTES_ACKED = 120  # offset of tcpi_bytes_acked in struct tcp_info (Linux >= 4.1)


def _direct_node(client: Any) -> Any:
    wait_until(lambda: bool(client._scheduler.nodes), 10, "the node")
    node = client._scheduler.nodes[0]
    wait_until(lambda: len(node.direct.ready) == 2, 30, "two direct links")
    return node


def _direct_pids(node: Any) -> set[int]:
    """The pids of the node's direct workers, as each said in its NodeInfo ("host:pid")."""
    return {int(link.info.name.rsplit(":", 1)[1]) for link in list(node.direct.ready)}


def _received(node: Any) -> int:
    """What the ppserver received on the client's own connection to it (bytes its kernel acknowledged)."""
    info = node.link.stream.sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 256)
    return int(struct.unpack_from("=Q", info, _BYTES_ACKED)[0])


def _sum_where(a: Any) -> tuple[float, int]:
    import os

    return float(a.sum()), os.getpid()


def _held_where() -> tuple[int, int]:
    import os

    from ppft_worker.process import refs

    return refs.held(), os.getpid()


def _resolve(ref_id: int) -> object:
    from ppft_worker.process import refs

    return refs.resolve(ref_id)


def test_a_ref_job_runs_on_a_direct_worker_and_the_ref_travels_once(
    module_ppserver: Any, make_client: Any
) -> None:
    np = pytest.importorskip("numpy")
    client = make_client(0, ppservers=(module_ppserver.address,))
    node = _direct_node(client)
    direct = _direct_pids(node)
    array = np.arange(2 * MiB, dtype=np.float64)  # 16 MiB
    before = _received(node)
    ref = client.put(array)
    ran = [job() for job in [client.submit(_sum_where, (ref,)) for _ in range(40)]]
    assert {value for value, _ in ran} == {float(array.sum())}
    assert {pid for _, pid in ran} <= direct, "ref jobs run on the ppserver's direct workers"
    received = _received(node) - before
    assert array.nbytes <= received < array.nbytes * 1.05, "the ppserver received the array once"

    ref_id = ref.id
    ref.release()
    with pytest.raises(ppft.RefError, match=rf"ref {ref_id:#x} was released"):
        client.submit(_sum_where, (ref,))
    # The ppserver passes the release on; an idle direct worker takes it in and forgets the array.
    deadline = time.monotonic() + 20
    while True:
        held, pid = client.submit(_held_where)()
        assert pid in direct
        if held == 0:
            break
        assert time.monotonic() < deadline, "a direct worker still holds the released ref"
        time.sleep(1)  # idle: a direct worker reads its ref pipe after 0.5 s without a job
    with pytest.raises(ppft.RefUnavailableError, match=rf"ref {ref_id:#x} is not held.*released"):
        client.submit(_resolve, (ref_id,))()


def test_a_ref_put_just_before_its_job_is_waited_for(module_ppserver: Any, make_client: Any) -> None:
    """The Put goes on the ppserver's link, the job on a direct link: whichever arrives first, each of many
    fresh refs reaches its job on the direct worker."""
    client = make_client(0, ppservers=(module_ppserver.address,))
    node = _direct_node(client)
    direct = _direct_pids(node)
    for i in range(30):
        ref = client.put(list(range(i + 1)))
        value, pid = client.submit(_len_where, (ref,))()
        assert (value, pid in direct) == (i + 1, True)
        ref.release()


def _len_where(items: list[int]) -> tuple[int, int]:
    import os

    return len(items), os.getpid()


def test_a_refused_ref_fails_its_jobs_on_a_direct_worker(tmp_path: Any, make_client: Any) -> None:
    cluster = Cluster(tmp_path)
    try:
        proc = cluster.ppserver(workers=1, extra=("--refs-memory", "1MiB"))
        client = make_client(0, ppservers=(proc.address,))
        wait_until(lambda: bool(client._scheduler.nodes), 10, "the node")
        node = client._scheduler.nodes[0]
        wait_until(lambda: len(node.direct.ready) == 1, 30, "a direct link")
        ref = client.put(b"x" * (2 * MiB))
        with pytest.raises(ppft.RefUnavailableError, match=rf"ref {ref.id:#x} .*refused.*--refs-memory"):
            client.submit(_len_where, (ref,))()
        assert client.submit(_held_where)()[1] in _direct_pids(node)
    finally:
        cluster.close()
