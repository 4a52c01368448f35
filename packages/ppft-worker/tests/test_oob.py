"""`ppft_worker.oob`: large buffers out of band only when a pickle has them; `flatten` for version 1."""

from __future__ import annotations

import pickle

import pytest

from ppft_protocol import FunctionBody, Job, Pickled, function_digest
from ppft_worker.oob import OOB_MIN, dumps, flatten, loads
from ppft_worker.process.execute import JobRunner

np = pytest.importorskip("numpy")


def test_small_and_plain_values_stay_plain_pickles() -> None:
    for obj in ((1, "x", 2.0), b"x" * (2 * OOB_MIN), np.ones(10), [np.ones(OOB_MIN // 8 - 1)]):
        data = dumps(obj, 5)
        assert type(data) is bytes
        assert data == pickle.dumps(obj, 5)


def test_large_buffers_travel_as_views_of_the_object() -> None:
    big = np.arange(OOB_MIN, dtype=np.int64)
    data = dumps((big, "label", big), 5)
    assert type(data) is Pickled
    assert len(data.buffers) == 1 and data.buffers[0].obj is not None
    back = loads(data)
    assert back[0] is back[2] and back[1] == "label" and (back[0] == big).all()


def test_protocol_4_never_goes_out_of_band() -> None:
    assert type(dumps(np.ones(OOB_MIN), 4)) is bytes


def test_read_only_buffers_arrive_writable_unless_they_were_read_only() -> None:
    writable = np.ones(OOB_MIN)
    read_only = np.ones(OOB_MIN)
    read_only.flags.writeable = False
    field = b"".join(bytes(part) for part in dumps((writable, read_only), 5).parts())  # a frame held in bytes
    first, second = loads(field)
    assert first.flags.writeable and not second.flags.writeable
    assert (first == 1).all() and (second == 1).all()


def test_flatten_gives_the_plain_pickle_of_the_same_object() -> None:
    read_only = np.arange(OOB_MIN, dtype=np.float32)
    read_only.flags.writeable = False
    obj = {"a": np.arange(OOB_MIN), "b": [read_only, read_only], "c": np.ones((300, 100))[:, ::2], "d": 7}
    pickled = dumps(obj, 5)
    assert type(pickled) is Pickled
    for field in (pickled, b"".join(bytes(part) for part in pickled.parts())):
        flat = flatten(field)
        back = pickle.loads(flat)  # no buffers needed: a version-1 peer reads it
        assert (back["a"] == obj["a"]).all() and back["d"] == 7
        assert back["b"][0] is back["b"][1] and (back["b"][0] == read_only).all()
        assert not back["b"][0].flags.writeable and back["a"].flags.writeable
        assert (back["c"] == 1).all() and back["c"].shape == (300, 50)


def test_a_writable_buffer_travels_as_it_was_when_pickled() -> None:
    array = np.zeros(OOB_MIN)
    pickled = dumps((array,), 5)
    array[:] = 7  # the caller goes on using its array before the frame leaves
    (back,) = loads(pickled)
    assert (back == 0).all()


def test_a_worker_result_may_travel_as_views_of_its_value() -> None:
    array = np.zeros(OOB_MIN)
    pickled = dumps(array, 5, snapshot=False)
    assert type(pickled) is Pickled and pickled.buffers[0].obj is array


def _body() -> FunctionBody:
    sources = ("def echo(a):\n    return a\n",)
    return FunctionBody(function_digest("echo", sources, (), b""), "echo", sources, (), b"")


def test_a_worker_runs_a_job_with_buffered_arguments_and_answers_in_kind() -> None:
    runner = JobRunner()
    body = _body()
    runner.add_body(body)
    array = np.arange(OOB_MIN, dtype=np.int64)
    args = dumps((array,), 5)
    field = memoryview(bytearray(b"".join(bytes(part) for part in args.parts())))  # as a frame holds it
    result = runner.run(Job(1, body.digest, field, 5))
    assert result.ok and type(result.value) is Pickled
    assert (loads(result.value) == array).all()
    assert runner.run(Job(2, body.digest, pickle.dumps((3,), 5), 5)).value == pickle.dumps(3, 5)


def test_a_broken_buffered_pickle_fails_its_job_only() -> None:
    runner = JobRunner()
    body = _body()
    runner.add_body(body)
    field = b"\xffPB5" + bytes(4) + b"junk"
    result = runner.run(Job(1, body.digest, field, 5))
    assert not result.ok and result.error_type == "ppft_worker.errors.JobSetupError"
    assert "cannot be unpickled on this worker" in result.error_message
    assert "buffers cannot be described" in result.error_message
    assert runner.run(Job(2, body.digest, pickle.dumps((3,), 5), 5)).ok


def test_plain_results_flatten_buffered_values_for_a_version_1_client() -> None:
    from ppft_protocol import Result, ResultBatch
    from ppft_protocol.messages import encode_message
    from ppft_protocol.relay import decode_raw_results
    from ppft_worker.oob import plain_results

    array = np.arange(OOB_MIN)
    batch = ResultBatch((Result(1, True, dumps(array, 5)), Result(2, True, pickle.dumps(3, 5))))
    records = decode_raw_results(memoryview(b"".join(encode_message(batch, 2)))).forward((7, 8))
    plain = plain_results(records)
    first, second = plain.results
    assert (first.job_id, second.job_id) == (7, 8)
    assert (pickle.loads(first.value) == array).all() and pickle.loads(second.value) == 3
    assert encode_message(plain, 1)  # what a version-1 client can read


def test_the_guess_of_large_buffers_in_a_plain_pickle() -> None:
    from ppft_worker.oob import has_large_bytearray

    assert has_large_bytearray(pickle.dumps(np.ones(OOB_MIN // 8), 5))
    assert has_large_bytearray(pickle.dumps(["x", bytearray(OOB_MIN)], 5))
    assert not has_large_bytearray(pickle.dumps(b"\x96" * OOB_MIN, 5))  # bytes: no BYTEARRAY8
    assert not has_large_bytearray(pickle.dumps(list(range(30_000)), 5))
    assert not has_large_bytearray(pickle.dumps(np.ones(OOB_MIN // 8 - 1), 5))


def test_a_version_2_worker_returns_large_arrays_out_of_band_whatever_the_arguments() -> None:
    sources = ("def make(n):\n    import numpy\n    return numpy.arange(n)\n",)
    body = FunctionBody(function_digest("make", sources, (), b""), "make", sources, (), b"")
    for buffers, expected in ((True, Pickled), (False, bytes)):
        runner = JobRunner(buffers=buffers)
        runner.add_body(body)
        result = runner.run(Job(1, body.digest, pickle.dumps((OOB_MIN,), 5), 5))
        assert result.ok and type(result.value) is expected
        assert (loads(result.value) if buffers else pickle.loads(result.value))[-1] == OOB_MIN - 1
        small = runner.run(Job(2, body.digest, pickle.dumps((3,), 5), 5))
        assert type(small.value) is bytes
