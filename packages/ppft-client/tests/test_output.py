"""Jobs' output on the caller's side (`ppft_client.output.replay`, `ppft_client.output.live`): the parts of a
job's text on their streams, streams that refuse the text or are closed, the live printer's order, waits and
limit, and the register of output nobody asked for."""

from __future__ import annotations

import gc
import io
import threading
import time
from contextlib import redirect_stderr, redirect_stdout
from types import SimpleNamespace

from ppft_client.output.live import LivePrinter, LiveView, format_live
from ppft_client.output.replay import Unshown, segments, write_output
from ppft_protocol import Result


def test_segments_cut_ascii_and_utf8_text_at_byte_offsets() -> None:
    assert segments("out\nerr\nout\n", ((4, 8),)) == [(0, "out\n"), (1, "err\n"), (0, "out\n")]
    text = "\u2603\nerr \u00e9\n\u2603"  # 4 + 7 + 3 bytes
    assert segments(text, ((4, 11),)) == [(0, "\u2603\n"), (1, "err \u00e9\n"), (0, "\u2603")]
    assert segments(text, ((4, 11),), skip=6) == [(1, "r \u00e9\n"), (0, "\u2603")]
    assert segments("all stdout", ()) == [(0, "all stdout")]
    assert segments("", ()) == []


def test_a_jobs_text_goes_to_each_stream_in_order() -> None:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        write_output("a\nb\nc\n", ((2, 4),))
    assert (out.getvalue(), err.getvalue()) == ("a\nc\n", "b\n")


class _AsciiOnly(io.TextIOWrapper):
    def __init__(self) -> None:
        super().__init__(io.BytesIO(), encoding="ascii", errors="strict")


def test_text_a_stream_cannot_encode_reaches_its_buffer_as_the_job_wrote_it() -> None:
    stream = _AsciiOnly()
    with redirect_stdout(stream):
        write_output("caf\u00e9 \udcff\n")  # a surrogate escape: the byte 0xff as the job wrote it
    stream.flush()
    assert stream.buffer.getvalue() == b"caf\\xe9 \xff\n"  # type: ignore[attr-defined]


def test_a_closed_or_missing_stdout_drops_the_text_without_raising() -> None:
    closed = io.StringIO()
    closed.close()
    with redirect_stdout(closed):
        write_output("lost\n")
    with redirect_stdout(None):  # type: ignore[type-var]
        write_output("lost too\n")


def test_live_lines_are_prefixed_and_ended() -> None:
    assert format_live(3, "127.0.0.1:35000", 1, "a\nb") == [
        (1, "[job 3 on 127.0.0.1:35000] a\n"),
        (1, "[job 3 on 127.0.0.1:35000] b\n"),
    ]


def test_the_printer_prints_in_order_and_waits_tell_when_lines_are_out() -> None:
    out, err = io.StringIO(), io.StringIO()
    printer = LivePrinter()
    with redirect_stdout(out), redirect_stderr(err):
        printer.put([(0, "one\n"), (1, "two\n")])
        mark = printer.put([(0, "three\n")])
        assert printer.wait(mark, timeout=10)
        printer.close()
    assert (out.getvalue(), err.getvalue()) == ("one\nthree\n", "two\n")


class _Stuck(io.StringIO):
    """A stdout that blocks every write until released: a pipe nobody reads."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def write(self, text: str) -> int:
        self.release.wait(30)
        return super().write(text)


def test_a_stuck_stdout_delays_a_wait_once_and_drops_what_overflows() -> None:
    stuck = _Stuck()
    printer = LivePrinter()
    printer.LIMIT = 100
    with redirect_stdout(stuck):
        first = printer.put([(0, "a" * 40 + "\n")])
        deadline = time.monotonic() + 10
        while printer._queue and time.monotonic() < deadline:  # the thread took it, and is stuck on it
            time.sleep(0.01)
        started = time.monotonic()
        assert not printer.wait(first, timeout=0.2)
        assert not printer.wait(first, timeout=5)  # stuck: no second wait
        assert time.monotonic() - started < 2
        for _ in range(5):
            printer.put([(0, "b" * 40 + "\n")])  # 100 characters fit: two lines, three dropped
        stuck.release.set()
        printer.close()
    lines = stuck.getvalue().splitlines()
    assert lines[:3] == ["a" * 40, "b" * 40, "b" * 40]
    assert len(lines) == 3  # the note about the dropped lines went to stderr


class _Job:
    _replayed = False
    _unshown_key = 0


def test_unshown_keeps_texts_in_order_and_marks_their_jobs_shown() -> None:
    unshown = Unshown()
    jobs = [_Job() for _ in range(3)]
    for n, job in enumerate(jobs):
        unshown.add(job, f"text {n}\n", ())
    unshown.discard(jobs[1])  # asked for: shown by its own caller
    assert unshown.take_all() == [("text 0\n", ()), ("text 2\n", ())]
    assert jobs[0]._replayed and jobs[2]._replayed and not unshown


def test_unshown_shows_a_dropped_jobs_text_and_never_confuses_two_jobs() -> None:
    unshown = Unshown()
    for n in range(50):  # each job freed at once: its id() is reused by the next one
        unshown.add(_Job(), f"{n}\n", ())
    gc.collect()
    assert [text for text, _ in unshown.take_all()] == [f"{n}\n" for n in range(50)]


def test_a_finished_jobs_rest_is_printed_live_once_and_it_counts_as_shown() -> None:
    out, err = io.StringIO(), io.StringIO()
    view = LiveView()
    job = SimpleNamespace(tid=3, _live_shown=0, _replayed=False, _live_mark=0)
    with redirect_stdout(out), redirect_stderr(err):
        view.pieces([(job, 1, 0, "one\n"), (job, 2, 4, "warn\n")], "local")
        view.pieces([(job, 1, 20, "late\n")], "local")  # 11 bytes were skipped by the node
        result = Result(3, True, b"", "one\nwarn\n" + "x" * 11 + "late\nrest", stderr_spans=((4, 9),))
        view.finish([(job, result)], "local")
        view.wait(job._live_mark)
        view.close()
    assert job._replayed
    assert out.getvalue() == (
        "[job 3 on local] one\n"
        "[job 3 on local] [... 11 bytes not shown: written faster than live output could follow; "
        "the job's result has all of it]\n"
        "[job 3 on local] late\n"
        "[job 3 on local] rest\n"
    )
    assert err.getvalue() == "[job 3 on local] warn\n"
