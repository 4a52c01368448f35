"""Objects shipped once with `put()`: real local workers, a real ppserver (its status figures), a dial-in
worker, a ppserver restarted under the client, and the errors (an object that cannot travel, a ref released
or of another server, a ppserver that refuses a put past its --refs-memory)."""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Callable
from typing import Any

import pytest

import ppft
from clusterlib import ACCEPT_WORKERS, Cluster, wait_until
from ppft_client.shipping import ShippingError
from scriptlib import run_script
from sshlib import Sshd
from sshlib import sshd as sshd  # noqa: PLC0414 - the fixture
from statuslib import metrics, ppserver_with_page, status

MiB = 1024 * 1024


def size_of(data: Any, k: int = 0) -> int:
    return len(data) + k


def plus(a: int, b: int) -> int:
    return a + b


def test_put_objects_script(script_mode: dict[str, str]) -> None:
    ran = run_script("put_objects.py", env=script_mode).check()
    assert ran.stdout == (
        "submit: [4999950000]\n"
        "template: 4999950001\n"
        "in a dill-pickled argument: 100000\n"
        "nested: 4\n"
        "after release: RefError True\n"
        "executor submit: 4999950002\n"
        "executor map: [4999950000, 4999950001, 4999950002]\n"
    )


def test_a_ppserver_holds_a_ref_once_and_frees_it_on_release(
    cluster: Cluster, make_client: Callable[..., Any]
) -> None:
    proc, url = ppserver_with_page(cluster, workers=2)
    client = make_client(0, ppservers=(proc.address,))
    ref = client.put(b"x" * (4 * MiB))
    assert [client.submit(size_of, (ref, k))() for k in range(30)] == [4 * MiB + k for k in range(30)]
    figures = status(url)["refs"]
    assert figures["count"] == 1 and 4 * MiB < figures["bytes"] < 4 * MiB + 100
    assert metrics(url)[("ppft_refs", ())] == 1
    ref.release()
    wait_until(lambda: status(url)["refs"]["count"] == 0, 15, "the ref released on the ppserver")
    assert status(url)["refs"]["bytes"] == 0


def size_when(gate: str, data: Any) -> int:
    """len(data), once the file `gate` exists (at most 30 s)."""
    import os
    import time

    deadline = time.monotonic() + 30
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    return len(data)


@pytest.mark.parametrize("where", ["local", "ppserver"])
def test_jobs_submitted_before_release_still_get_the_object(
    where: str, cluster: Cluster, make_client: Callable[..., Any], tmp_path: Any
) -> None:
    proc, url = ppserver_with_page(cluster, workers=2)
    client = make_client(2) if where == "local" else make_client(0, ppservers=(proc.address,))
    gate = str(tmp_path / "gate")
    with client.put(b"x" * MiB) as ref:
        jobs = [client.submit(size_when, (gate, ref)) for _ in range(6)]  # 2 run, 4 wait
    assert not any(job.done() for job in jobs)
    with pytest.raises(ppft.RefError, match="was released"):
        client.submit(size_when, (gate, ref))
    if where == "ppserver":
        wait_until(lambda: status(url)["refs"]["count"] == 1, 15, "the ref held while its jobs are not done")
    open(gate, "w").close()
    assert [job.result(timeout=60) for job in jobs] == [MiB] * 6
    if where == "ppserver":
        wait_until(lambda: status(url)["refs"]["count"] == 0, 15, "the ref released once its jobs were done")


def test_many_ref_jobs_keep_the_client_s_book_of_them_bounded(make_client: Callable[..., Any]) -> None:
    client = make_client(2)
    ref = client.put(list(range(100)))
    for _ in range(3):
        jobs = [client.submit(size_of, (ref, k)) for k in range(5000)]
        assert [job() for job in jobs] == [100 + k for k in range(5000)]
    assert len(client._refs._users) <= 2 * 5000  # the jobs that are done are dropped as it grows
    last = client.submit(size_of, (ref,))
    ref.release()
    assert last.result(timeout=30) == 100


def test_the_last_handle_collected_releases_the_ref_everywhere(
    cluster: Cluster, make_client: Callable[..., Any]
) -> None:
    proc, url = ppserver_with_page(cluster, workers=1)
    client = make_client(0, ppservers=(proc.address,))
    ref = client.put([1, 2, 3])
    assert client.submit(size_of, (ref,))() == 3
    del ref
    gc.collect()
    wait_until(lambda: status(url)["refs"]["count"] == 0, 15, "the ref released on the ppserver")


def test_a_restarted_ppserver_gets_the_ref_again(cluster: Cluster, make_client: Callable[..., Any]) -> None:
    first = cluster.ppserver(workers=1)
    client = make_client(0, ppservers=(first.address,))
    ref = client.put("hello")
    assert client.submit(size_of, (ref,))() == 5
    cluster.kill(first)
    first.popen.wait(10)
    cluster.ppserver(workers=1, port=first.port)
    assert client.submit(size_of, (ref, 1))() == 6


def test_a_dial_in_worker_gets_the_ref(cluster: Cluster, make_client: Callable[..., Any]) -> None:
    server = cluster.ppserver(workers=0, extra=ACCEPT_WORKERS)
    cluster.dialin(server, workers=2)
    client = make_client(0, ppservers=(server.address,))
    ref = client.put(list(range(1000)))
    assert {client.submit(size_of, (ref,))() for _ in range(20)} == {1000}


def test_a_put_past_refs_memory_is_refused_and_only_its_jobs_fail(
    cluster: Cluster, make_client: Callable[..., Any]
) -> None:
    proc, url = ppserver_with_page(cluster, workers=1, extra=("--refs-memory", "1MiB"))
    client = make_client(0, ppservers=(proc.address,))
    ref = client.put(b"x" * (2 * MiB))
    job = client.submit(size_of, (ref,))
    with pytest.raises(ppft.RefUnavailableError, match=rf"ref {ref.id:#x} .*refused.*--refs-memory"):
        job()
    assert client.submit(plus, (1, 2))() == 3
    assert status(url)["refs"] == {"count": 0, "bytes": 0, "limit": MiB, "refused": 1}


def test_an_object_that_cannot_be_pickled_raises_shipping_error_at_put(
    make_client: Callable[..., Any],
) -> None:
    client = make_client(1)
    with pytest.raises(ShippingError, match="put"):
        client.put(x for x in range(3))


def test_a_released_ref_is_refused_at_submit_naming_it(make_client: Callable[..., Any]) -> None:
    client = make_client(1)
    ref = client.put(1)
    ref.release()
    with pytest.raises(ppft.RefError, match=rf"ref {ref.id:#x} was released"):
        client.submit(plus, (ref, 1))


def test_first_puts_from_many_threads_at_once_share_one_table(make_client: Callable[..., Any]) -> None:
    client = make_client(1)
    barrier = threading.Barrier(16)
    refs: list[Any] = []

    def put(i: int) -> None:
        barrier.wait(10)
        refs.append(client.put(i))

    threads = [threading.Thread(target=put, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(client.submit(plus, (ref, 0))() for ref in refs) == list(range(16))


def test_a_ref_of_another_server_is_refused_at_submit_naming_it(make_client: Callable[..., Any]) -> None:
    one, other = make_client(1), make_client(1)
    ref = one.put(1)
    with pytest.raises(ppft.RefError, match=rf"ref {ref.id:#x} belongs to another Server"):
        other.submit(plus, (ref, 1))
    other.put(2)  # the other server has refs of its own now: still refused
    with pytest.raises(ppft.RefError, match="another Server"):
        other.submit(plus, ((ref,), 1))


def test_destroy_releases_every_ref(cluster: Cluster, make_client: Callable[..., Any]) -> None:
    proc, url = ppserver_with_page(cluster, workers=1)
    client = make_client(0, ppservers=(proc.address,))
    refs = [client.put(k) for k in range(3)]
    assert client.submit(plus, (refs[2], 1))() == 3
    assert status(url)["refs"]["count"] == 3
    client.destroy()
    wait_until(lambda: status(url)["refs"]["count"] == 0, 15, "the refs released on the ppserver")
    assert all(ref.released for ref in refs)


def in_shared_memory(a: Any) -> tuple[float, bool]:
    """The array's sum, and whether its memory is a mapping of a shared segment (memfd) in this worker."""
    address = a.ctypes.data
    with open("/proc/self/maps") as maps:
        for line in maps:
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            if start <= address < end:
                return float(a.sum()), "memfd:" in line
    return float(a.sum()), False


def test_a_big_array_is_held_once_in_shared_memory_for_the_local_workers(
    make_client: Callable[..., Any],
) -> None:
    np = pytest.importorskip("numpy")
    client = make_client(2)
    array = np.arange(1 << 18, dtype=np.float64)  # 2 MiB: over the segment threshold
    ref = client.put(array)
    results = {client.submit(in_shared_memory, (ref,))() for _ in range(10)}
    assert results == {(float(array.sum()), True)}


def test_a_big_array_reaches_a_ppserver_s_workers(cluster: Cluster, make_client: Callable[..., Any]) -> None:
    np = pytest.importorskip("numpy")
    proc, url = ppserver_with_page(cluster, workers=2)
    client = make_client(0, ppservers=(proc.address,))
    array = np.arange(1 << 18, dtype=np.float64)
    ref = client.put(array)
    results = {client.submit(in_shared_memory, (ref,))() for _ in range(10)}
    assert results == {(float(array.sum()), True)}  # the ppserver shares it with its workers too
    assert 2 * MiB <= status(url)["refs"]["bytes"] < 2 * MiB + 1000
    held = memfds(proc.pid)  # the ref's segment, and its workers' output regions
    ref.release()
    wait_until(lambda: status(url)["refs"]["count"] == 0, 10, "the ppserver to forget the ref")
    wait_until(lambda: memfds(proc.pid) == held - 1, 10, "the ppserver to close the ref's segment")


def memfds(pid: int) -> int:
    """How many shared memory segments (memfds) process `pid` holds open."""
    folder = f"/proc/{pid}/fd"
    count = 0
    for name in os.listdir(folder):
        try:
            count += os.readlink(f"{folder}/{name}").startswith("/memfd:")
        except OSError:  # closed meanwhile
            pass
    return count


def test_an_ssh_node_gets_the_ref(sshd: Sshd, make_client: Callable[..., Any]) -> None:
    client = make_client(0, ppservers=(sshd.entry(workers=2),), ssh=sshd.prefix())
    ref = client.put(list(range(1000)))
    assert {client.submit(size_of, (ref, 1)).result(timeout=60) for _ in range(20)} == {1001}


def test_a_version_1_ppserver_gets_the_object_inline_in_each_job(
    protocol_1_ppserver: dict[str, str], make_client: Callable[..., Any]
) -> None:
    client = make_client(0, ppservers=(protocol_1_ppserver["PPSERVER"],))
    ref = client.put(list(range(1000)))
    assert [client.submit(size_of, (ref, k))() for k in range(5)] == [1000, 1001, 1002, 1003, 1004]
    nested = client.put("abc")
    assert client.submit(size_of, ({"x": [nested]}["x"][0], 1))() == 4


def test_a_release_between_a_submit_s_check_and_its_book_keeping_waits_for_that_job(
    make_client: Callable[..., Any],
) -> None:
    """A release from another thread that falls after a submit let the ref in, but before the submit noted
    its job as using it, still waits for that job: the job gets the object."""
    client = make_client(1)
    ref = client.put(41)
    table = client._refs
    use = table.use
    released = threading.Event()

    def use_with_a_release_in_between(job: Any) -> None:
        releaser = threading.Thread(target=lambda: (ref.release(), released.set()))
        releaser.start()
        releaser.join(1)  # done at once unless the check and the book-keeping are one step for release()
        use(job)

    table.use = use_with_a_release_in_between
    job = client.submit(plus, (ref, 1))
    table.use = use
    assert job.result(timeout=30) == 42
    assert released.wait(10)
    with pytest.raises(ppft.RefError, match="was released"):
        client.submit(plus, (ref, 1))


def test_a_ref_job_made_but_never_queued_does_not_keep_a_released_ref() -> None:
    """`Executor.map` whose second arguments cannot be pickled: the first job was made with the ref, then
    dropped unqueued; a release waiting for it frees the ref once that job is gone."""
    with ppft.Executor(1) as executor:
        ref = executor.put(7)
        table = executor._server._refs
        made: list[Any] = []
        use = table.use
        table.use = lambda job: (made.append(job), use(job))  # the unqueued job outlives the map call
        with pytest.raises(ShippingError):
            executor.map(plus, [ref, ref], [1, (x for x in ())])  # a generator: no pickle
        table.use = use
        book = table.book.refs
        wait_until(lambda: ref.id in book, 15, "the ref held by the I/O thread")
        ref.release()
        assert ref.id in book  # the job made with it is not done: the release waits for it
        made.clear()
        gc.collect()
        wait_until(lambda: ref.id not in book, 15, "the ref forgotten once its unqueued job was gone")


def test_a_submit_that_could_not_pickle_its_arguments_leaves_its_ref_to_no_later_job(
    make_client: Callable[..., Any],
) -> None:
    """A ref pickled by a submit that then failed (or by the caller's own `pickle.dumps`) belongs to no job:
    a later job of this or another server, without refs, is not refused for it."""
    import copy
    import pickle

    one, other = make_client(1), make_client(1)
    ref = one.put(1)
    with pytest.raises(ShippingError):
        one.submit(plus, (ref, (x for x in ())))  # the ref pickles, the generator does not
    assert other.submit(plus, (1, 1))() == 2
    pickle.dumps(ref)
    assert copy.deepcopy([ref])[0] is ref and copy.copy(ref) is ref  # a handle: copies are itself
    ref.release()
    assert one.submit(plus, (2, 1))() == 3
    assert other.submit(plus, (3, 1))() == 4


@pytest.mark.parametrize("proto", [0, 1, 2, 4, 5])
def test_refs_are_found_in_a_job_s_arguments_at_every_pickle_protocol(
    proto: int, make_client: Callable[..., Any]
) -> None:
    """Nested, repeated, beside bytes that look like a ref's pickle, and through module data (`globals=`):
    each job gets its objects, and a released ref is refused at submit whatever the protocol."""
    client = make_client(1, proto=proto)
    one, two = client.put("abc"), client.put(list(range(5)))
    lookalike = b"\x83\x19p\x8a\x08" + bytes(8) + b"\x83\x19p\x8a\x01\x05"  # no ref has such an id
    assert client.submit(size_of, ({"a": [one, one]}["a"][1], len(lookalike)))() == 3 + 19
    assert client.submit(size_of, (two, 1))() == 6
    assert client.submit(size_of, (two,), globals={"unused": 1})() == 5
    assert client.submit(size_of, (lookalike,))() == 19
    two.release()
    with pytest.raises(ppft.RefError, match="was released"):
        client.submit(size_of, ((1, [two]),))
    with pytest.raises(ppft.RefError, match="was released"):
        client.submit(size_of, (two,), globals={"unused": 1})
