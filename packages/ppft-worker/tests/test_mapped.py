"""`ppft_worker.mapped`: buffered pickles whose buffers lie in a shared segment, and when they are let go."""

from __future__ import annotations

import pickle

import pytest

from ppft_protocol import Pickled
from ppft_worker import mapped
from ppft_worker.segments import SegmentError, open_segments, segments_available

pytestmark = pytest.mark.skipif(not segments_available(), reason="shared segments need Linux memfd and /proc")

BIG = mapped.SEGMENT_MIN


def value_of(*buffers: bytes | bytearray) -> Pickled:
    """What `oob.dumps(..., snapshot=False)` gives for a tuple of `PickleBuffer`s."""
    views: list[memoryview] = []
    data = pickle.dumps(
        tuple(pickle.PickleBuffer(b) for b in buffers), 5, buffer_callback=lambda b: views.append(b.raw())
    )
    return Pickled(data, views)


def test_a_value_travels_as_a_few_bytes_and_loads_from_the_segment() -> None:
    field = mapped.result_field(1, value_of(bytearray(b"a" * BIG), b"b" * BIG))
    try:
        assert field is not None and mapped.is_mapped(field) and len(field) < 300
        opened = mapped.open_field(field)
        first, second = pickle.loads(opened.data, buffers=opened.buffers)
        assert bytes(first) == b"a" * BIG and bytes(second) == b"b" * BIG
        assert not opened.buffers[0].readonly and opened.buffers[1].readonly  # as they were pickled
    finally:
        mapped.release([mapped.RELEASE | 1])


def test_small_values_stay_in_the_pipe() -> None:
    assert mapped.result_field(2, value_of(bytearray(BIG - 1))) is None


def test_only_a_cancel_marked_release_lets_a_value_go() -> None:
    held = mapped.held()[0]
    field = mapped.result_field(3, value_of(bytearray(BIG)))
    assert field is not None and mapped.held()[0] == held + 1
    mapped.release([3])  # a real cancel of job 3 (a steal's, racing the job): the value stays
    assert mapped.held()[0] == held + 1
    mapped.open_field(field)
    mapped.release([mapped.RELEASE | 3])
    assert mapped.held()[0] == held
    with pytest.raises(SegmentError, match="is gone"):
        mapped.open_field(field)


def test_a_later_segment_under_the_same_fd_is_refused() -> None:
    field = mapped.result_field(4, value_of(bytearray(BIG)))
    assert field is not None
    mapped.release([mapped.RELEASE | 4])
    other = mapped.result_field(5, value_of(bytearray(BIG)))  # the same size, most likely the same fd
    try:
        with pytest.raises(SegmentError):
            mapped.open_field(field)
    finally:
        mapped.release([mapped.RELEASE | 5])
    assert other is not None


def test_arguments_snapshotted_in_a_segment_map_until_their_job_is_done() -> None:
    count = open_segments()[0]
    source = bytearray(b"x" * BIG)
    views = mapped.snapshot([memoryview(source)])
    assert views is not None and views[0].readonly and open_segments()[0] == count + 1
    source[:1] = b"y"  # the snapshot is the array as it was
    args = Pickled(b"pickle", views)
    field = mapped.mapped_args(args)
    assert field is not None
    opened = mapped.open_field(field)
    assert bytes(opened.buffers[0][:2]) == b"xx" and not opened.buffers[0].readonly  # it was writable
    mapped.close_args(args)
    assert open_segments()[0] == count and mapped.mapped_args(args) is None
    assert bytes(views[0][:1]) == b"x"  # the client's own views stay valid


def test_a_snapshot_whose_arguments_are_gone_closes_its_segment() -> None:
    count = open_segments()[0]
    views = mapped.snapshot([memoryview(bytearray(BIG))])
    assert views is not None and open_segments()[0] == count + 1
    del views
    assert open_segments()[0] == count


def test_a_relay_maps_a_value_read_only_and_it_outlives_the_workers_segment() -> None:
    field = mapped.result_field(6, value_of(bytearray(b"v" * BIG)))
    assert field is not None
    opened = mapped.open_field(field, writable=False)  # a relay only sends it on
    mapped.release([mapped.RELEASE | 6])  # the worker lets go at once: the mapping keeps the bytes
    assert opened.buffers[0].readonly and bytes(opened.buffers[0][-2:]) == b"vv"


def test_a_relays_peer_arguments_go_in_a_segment_when_first_sent_and_load_writable() -> None:
    from ppft_protocol import Job
    from ppft_worker.pool.shared import SharedSegments

    class Task:
        def __init__(self, args: bytes) -> None:
            self.wire = Job(1, b"d" * 32, args, 5)

    value = value_of(b"a" * BIG)  # a read-only buffer: over a socket it arrives in a writable frame
    frame = b"".join(bytes(part) for part in value.parts())  # the buffered pickle as a peer sends it
    shared = SharedSegments(lambda w, ids: None, relay=True)
    count = open_segments()[0]
    for left in (frame[: BIG - 1], frame[:-1]):  # too small; a malformed field (a hostile peer's): as it came
        other = Task(left)
        assert shared.local_args(other) is None and other.wire.args == left
    task = Task(frame)
    field = shared.local_args(task)
    assert field is not None and mapped.is_mapped(field) and open_segments()[0] == count + 1
    assert task.wire.args.__class__ is Pickled  # the task keeps the snapshot: a requeued job goes again by it
    assert shared.local_args(task) == field
    opened = mapped.open_field(field)
    assert bytes(opened.buffers[0][:2]) == b"aa" and not opened.buffers[0].readonly
    shared.done([task, None])
    assert open_segments()[0] == count


class _Killed:
    def __init__(self) -> None:
        self.killed = False

    def kill(self) -> None:
        self.killed = True


class _Worker:
    def __init__(self) -> None:
        self.proc = _Killed()


def test_the_pool_maps_a_value_then_releases_it_and_reruns_one_whose_segment_is_gone() -> None:
    from ppft_protocol import Result, ResultBatch
    from ppft_worker.pool.shared import SharedSegments

    cancels: list[tuple[int, ...]] = []

    def cancel(w: object, ids: tuple[int, ...]) -> None:
        cancels.append(ids)
        mapped.release(ids)  # what the worker does with that cancel

    shared = SharedSegments(cancel)
    tiny = Result(6, True, pickle.dumps(7, 5))
    field = mapped.result_field(7, value_of(bytearray(b"v" * BIG)))
    assert field is not None
    w = _Worker()
    batch = shared.map_results(w, ResultBatch((tiny, Result(7, True, field))))  # type: ignore[arg-type]
    assert batch.results[0] == tiny and type(batch.results[1].value) is Pickled
    assert cancels == [(mapped.RELEASE | 7,)] and mapped.held()[0] == 0  # released once mapped
    again = shared.map_results(w, ResultBatch((tiny, Result(7, True, field))))  # type: ignore[arg-type]
    assert again.results == (tiny,) and w.proc.killed  # gone: its worker is killed, the job runs again
