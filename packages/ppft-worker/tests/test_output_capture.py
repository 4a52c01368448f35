"""A job's output in its worker and its pool: stdout and stderr told apart (`capture`), mirrored into the
output region as written (`outregion`), read by the pool when the worker dies or while live output is watched
(`poolout`), with workers started both by fork and by exec."""

from __future__ import annotations

import collections
import os
import pickle
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ppft_protocol import FunctionBody, Job, Result, function_digest
from ppft_worker.pool import WorkerPool
from ppft_worker.process.capture import OutputCapture
from ppft_worker.process.execute import JobRunner
from ppft_worker.process.outregion import RING, SWITCHES, new_region, read_region
from ppft_worker.runtime.loop import Loop

Spans = tuple[tuple[int, int], ...]

TIMEOUT = 30.0


def make_body(name: str, source: str) -> FunctionBody:
    return FunctionBody(function_digest(name, (source,), (), b""), name, (source,))


def run(runner: JobRunner, body: FunctionBody, *args: Any, job_id: int = 1) -> Result:
    if not runner.has_body(body.digest):
        runner.add_body(body)
    return runner.run(Job(job_id, body.digest, pickle.dumps(args, 5), 5))


@pytest.fixture
def region() -> Iterator[Any]:
    """A region, mapped as a forked worker has it (a capture keeps views of it: it is unmapped when freed)."""
    fd, mapping = new_region()
    os.close(fd)
    yield mapping


# -- the capture ----------------------------------------------------------------------------------------

BOTH = make_body(
    "both",
    "def both():\n"
    "    import sys\n"
    "    print('out \\u2603')\n"
    "    sys.stderr.write('err \\u00e9\\n')\n"
    "    print('out again', end='')\n"
    "    return 1\n",
)


def test_stderr_parts_are_spans_of_the_output_in_utf8_bytes() -> None:
    result = run(JobRunner(), BOTH)
    assert result.output == "out \u2603\nerr \u00e9\nout again"
    data = result.output.encode()
    assert [data[a:b].decode() for a, b in result.stderr_spans] == ["err \u00e9\n"]
    assert result.stderr_spans == ((8, 15),)


def test_a_job_that_writes_nothing_has_no_output_and_no_spans() -> None:
    result = run(JobRunner(), make_body("quiet", "def quiet():\n    return 2\n"))
    assert (result.output, result.stderr_spans) == ("", ())


def test_output_and_spans_start_afresh_with_each_job() -> None:
    runner = JobRunner()
    run(runner, BOTH)
    body = make_body("err_only", "def err_only():\n    import sys\n    sys.stderr.write('e')\n")
    assert (run(runner, body).output, run(runner, body).stderr_spans) == ("e", ((0, 1),))


def test_bytes_written_to_the_buffer_join_the_text_and_odd_bytes_survive() -> None:
    body = make_body(
        "raw",
        "def raw():\n    import sys\n    sys.stdout.buffer.write(b'caf\\xc3\\xa9 \\xff\\n')\n    return 0\n",
    )
    output = run(JobRunner(), body).output
    assert output == "caf\u00e9 \udcff\n"
    assert output.encode("utf-8", "surrogateescape") == b"caf\xc3\xa9 \xff\n"


def test_the_streams_act_as_text_streams_a_job_may_use() -> None:
    body = make_body(
        "probe",
        "def probe():\n"
        "    import sys\n"
        "    sys.stdout.close()\n"  # closes nothing: the next print still lands
        "    print('still here')\n"
        "    sys.stdout.reconfigure(encoding='latin-1')\n"
        "    sys.stdout.writelines(['a', 'b\\n'])\n"
        "    try:\n"
        "        sys.stdout.write(b'x')\n"
        "    except TypeError as exc:\n"
        "        print('TypeError', exc)\n"
        "    return (sys.stdout.isatty(), sys.stdout.writable(), sys.stdout.encoding, sys.stderr.name)\n",
    )
    result = run(JobRunner(), body)
    assert result.output == "still here\nab\nTypeError write() argument must be str, not bytes\n"
    assert pickle.loads(result.value) == (False, True, "utf-8", "<stderr>")


def assert_region_agrees(region: tuple[str, Spans], result: tuple[str, Spans]) -> None:
    """The region's text is the result's, and so are its stderr parts from the oldest switch it keeps on."""
    (region_text, region_spans), (text, spans) = region, result
    assert region_text == text
    switches = [bound for span in spans for bound in span]
    if switches and switches[-1] == len(text.encode()):
        switches.pop()  # the last part of stderr ran to the end: no switch there
    oldest = switches[-SWITCHES] if len(switches) > SWITCHES else 0
    assert [s for s in region_spans if s[0] >= oldest] == [s for s in spans if s[0] >= oldest]


def test_a_region_keeps_the_last_switches_of_a_job_that_switches_often(region: Any) -> None:
    capture = OutputCapture(region)
    capture.job_id = 4
    for i in range(SWITCHES * 3):
        (capture.stderr if i % 2 else capture.stdout).write(f"line {i}\n")
    snapshot = read_region(region)
    text, spans = capture.take()
    assert len(spans) == SWITCHES * 3 // 2 and snapshot is not None
    region_text, region_spans = snapshot.text()
    assert region_text == text
    assert region_spans[0][0] == 0  # before its oldest switch (to stdout), all is taken as stderr
    assert region_spans[1:] == spans[-(SWITCHES // 2) :]
    assert_region_agrees((region_text, region_spans), (text, spans))


def test_threads_of_a_job_writing_at_once_lose_nothing(region: Any) -> None:
    capture = OutputCapture(region)
    capture.job_id = 9

    def chatter(stream: Any, tag: str) -> None:
        for i in range(2000):
            stream.write(f"{tag}{i}\n")

    threads = [
        threading.Thread(target=chatter, args=(capture.stdout if n % 2 else capture.stderr, f"t{n}-"))
        for n in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snapshot = read_region(region)
    text, spans = capture.take()
    assert sorted(text.splitlines()) == sorted(f"t{n}-{i}" for n in range(4) for i in range(2000))
    assert snapshot is not None and snapshot.job_id == 9
    # how often the stream switched depends on how the threads were scheduled: the region keeps the last
    # SWITCHES switches, and agrees with the result from the oldest of those on
    assert_region_agrees(snapshot.text(), (text, spans))
    data = text.encode()
    err = "".join(data[a:b].decode() for a, b in spans)
    assert sorted(err.splitlines()) == sorted(f"t{n}-{i}" for n in (0, 2) for i in range(2000))


# -- the region -----------------------------------------------------------------------------------------


def test_the_region_holds_the_current_jobs_text_until_it_is_taken(region: Any) -> None:
    capture = OutputCapture(region)
    capture.job_id = 41
    capture.stdout.write("hello\n")
    capture.stderr.write("oops\n")
    capture.stdout.write("half")
    snapshot = read_region(region)
    assert snapshot is not None
    assert (snapshot.job_id, snapshot.start, snapshot.end) == (41, 0, 15)
    assert snapshot.text() == ("hello\noops\nhalf", ((6, 11),))
    again = read_region(region, (snapshot.generation, 11))  # what came after byte 11
    assert again is not None and again.pieces == [(0, b"half")]
    assert read_region(region, (snapshot.generation, 15)) is None  # nothing new
    capture.take()
    assert read_region(region) is None
    capture.job_id = 42
    capture.stdout.write("next\n")
    fresh = read_region(region, (snapshot.generation, 15))  # a new generation: read from its start
    assert fresh is not None and (fresh.job_id, fresh.text()) == (42, ("next\n", ()))


def test_past_the_ring_the_region_keeps_the_last_megabyte(region: Any) -> None:
    capture = OutputCapture(region)
    lines = "".join(f"{i:07d}\n" for i in range(200_000))  # 1.6 MB
    capture.stderr.write("E" * 10)
    capture.stdout.write(lines[:100])
    capture.stderr.write("\u2603" * 5)
    capture.stdout.write(lines)
    snapshot = read_region(region)
    text, spans = capture.take()
    assert snapshot is not None and snapshot.end == len(text.encode())
    assert snapshot.start == snapshot.end - RING
    kept, kept_spans = snapshot.text()
    assert text.encode().endswith(kept.encode())
    assert kept_spans == ()  # the stderr parts were early: out of the ring
    assert spans == ((0, 10), (110, 125))


def test_an_execd_workers_region_is_mapped_on_its_first_write() -> None:
    fd, mapping = new_region()
    capture = OutputCapture(region_fd=fd)
    try:
        capture.job_id = 5
        capture.stdout.write("first\n")
        snapshot = read_region(mapping)
        assert snapshot is not None and snapshot.text() == ("first\n", ())
    finally:
        mapping.close()


# -- a real pool: a dead worker's text, live output -----------------------------------------------------

DOOMED = make_body(
    "doomed",
    "def doomed(how, wait_for):\n"
    "    import os, sys, time\n"
    "    print('before the end')\n"
    "    sys.stderr.write('why\\n')\n"
    "    if how == 'exit':\n"
    "        sys.stdout.write('last words')\n"
    "        os._exit(3)\n"
    "    for n in range(3):\n"
    "        print('line', n, flush=True)\n"
    "        deadline = time.monotonic() + 30\n"
    "        while not os.path.exists(wait_for + str(n)) and time.monotonic() < deadline:\n"
    "            time.sleep(0.005)\n"
    "    sys.stdout.write('tail')\n"
    "    return 'done'\n",
)


class Task:
    def __init__(self, job_id: int, args: tuple[Any, ...]) -> None:
        self.wire = Job(job_id, DOOMED.digest, pickle.dumps(args))
        self.body = DOOMED
        self.attempts = 0
        self.solo = False
        self.kept_output: Any = None

    def claim(self) -> bool:
        return True


class Harness:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, start: str) -> None:
        monkeypatch.setenv("PPFT_START", start)
        self.loop = Loop()
        self.queue: collections.deque[Task] = collections.deque()
        self.results: dict[int, Result] = {}
        self.live: list[tuple[int, int, int, str]] = []
        self.pool = WorkerPool(
            self.loop, 1, on_results=self.done, on_requeue=self.queue.extendleft, fork_threads=1
        )
        self.loop.on_idle = lambda: self.pool.dispatch(self.queue)

    def done(self, pairs: list[tuple[Task, Result]]) -> None:
        for task, result in pairs:
            self.results[task.wire.job_id] = result

    def until(self, predicate: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            self.loop.run_once(0.02)


@pytest.fixture(params=["fork", "exec"])
def harness(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    h = Harness(monkeypatch, "auto" if request.param == "fork" else "exec")
    try:
        h.pool.start()
        h.until(lambda: all(w.ready for w in h.pool._workers) and len(h.pool._workers) == 1, "a worker")
        yield h
    finally:
        h.pool.close()  # kills every worker by pid, even when the test failed
        h.loop.close()


def test_a_job_that_kills_its_worker_fails_with_what_it_wrote(harness: Harness) -> None:
    harness.queue.append(Task(7, ("exit", "")))
    harness.until(lambda: 7 in harness.results, "the job's result")
    result = harness.results[7]
    assert not result.ok and result.error_type == "ppft_worker.errors.WorkerLostError"
    assert result.output == "before the end\nwhy\nlast words"
    assert result.stderr_spans == ((15, 19),)
    assert "exited with code 3" in result.error_message
    assert "the last line 'last words'" in result.error_message


def test_live_output_comes_line_by_line_while_the_job_runs(harness: Harness, tmp_path: Path) -> None:
    gate = str(tmp_path / "gate")
    harness.pool.watch_output(
        lambda pieces: harness.live.extend((t.wire.job_id, s, o, x) for t, s, o, x in pieces)
    )
    harness.queue.append(Task(8, ("live", gate)))
    for n in range(3):
        want = f"line {n}\n"
        harness.until(lambda want=want: any(p[3].endswith(want) for p in harness.live), repr(want))  # type: ignore[misc]
        Path(gate + str(n)).touch()
    harness.until(lambda: 8 in harness.results, "the job's result")
    result = harness.results[8]
    assert result.ok and result.output == "before the end\nwhy\nline 0\nline 1\nline 2\ntail"
    shown = "".join(text for _, _, _, text in harness.live)
    assert shown == "before the end\nwhy\nline 0\nline 1\nline 2\n"  # "tail" is in the result only
    assert all(job_id == 8 for job_id, _, _, _ in harness.live)
    data = result.output.encode()
    for _, stream, offset, text in harness.live:
        assert data[offset : offset + len(text.encode())] == text.encode()
        assert stream == (2 if text == "why\n" else 1)
