"""`ppft_worker.segments`: memfd segments made by one process and mapped read-only by another by token."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from ppft_worker.segments import Segment, SegmentError, open_segment, open_segments, segments_available

pytestmark = pytest.mark.skipif(not segments_available(), reason="shared segments need Linux memfd and /proc")

TIMEOUT = 60

READER = textwrap.dedent(
    """
    import hashlib, sys
    from ppft_worker.segments import open_segment
    pid, fd, size = map(int, sys.argv[1:4])
    mapped = open_segment(pid, fd, size)
    print(hashlib.sha256(mapped.view).hexdigest(), mapped.view.readonly, flush=True)
    mapped.close()
    """
)

HOLDER = textwrap.dedent(
    """
    import sys
    from ppft_worker.segments import Segment
    segment = Segment.create(int(sys.argv[1]))
    segment.write([b"held" * (segment.size // 4)])
    segment.seal()
    print(*segment.token(), flush=True)
    sys.stdin.read()
    """
)


@pytest.fixture
def segment() -> Iterator[Segment]:
    made = Segment.create(1 << 20)
    try:
        yield made
    finally:
        made.close()


def mapped_segments() -> int:
    with open("/proc/self/maps") as maps:
        return maps.read().count("memfd:ppft")


def run_python(code: str, *args: object, **kwargs: object) -> subprocess.Popen[str]:
    proc: subprocess.Popen[str] = subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,  # type: ignore[call-overload]
    )
    return proc


def test_another_process_reads_a_sealed_segment_by_its_token(segment: Segment) -> None:
    data = os.urandom(segment.size)
    segment.view[:] = data
    segment.seal()
    proc = run_python(READER, *segment.token())
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    assert out.split() == [hashlib.sha256(data).hexdigest(), "True"]


def test_write_fills_a_segment_without_mapping_it(segment: Segment) -> None:
    parts: list[memoryview | bytes] = [b"a" * 1000, memoryview(bytearray(b"b" * 5000)), b"c"]
    segment.write(parts, offset=10)
    segment.seal()
    assert bytes(segment.view[10 : 10 + 6001]) == b"".join(bytes(p) for p in parts)
    assert bytes(segment.view[:10]) == b"\0" * 10


def test_write_past_the_end_is_refused(segment: Segment) -> None:
    with pytest.raises(SegmentError, match="do not fit"):
        segment.write([b"x" * 10], offset=segment.size - 5)


def test_a_sealed_segment_cannot_change(segment: Segment) -> None:
    segment.view[:4] = b"ppft"
    segment.seal()
    assert segment.view.readonly and bytes(segment.view[:4]) == b"ppft"
    with pytest.raises(OSError):
        os.pwrite(segment.fd, b"x", 0)
    with pytest.raises(OSError):
        os.ftruncate(segment.fd, 10)
    with pytest.raises(SegmentError, match="sealed"):
        segment.write([b"x"])


def test_seal_while_a_writable_view_is_held_says_what_to_do(segment: Segment) -> None:
    kept = segment.view[:10]
    with pytest.raises(SegmentError, match="release every view"):
        segment.seal()
    kept.release()


def test_a_reader_refuses_an_unsealed_segment(segment: Segment) -> None:
    with pytest.raises(SegmentError, match="not a sealed"):
        open_segment(*segment.token())


def test_a_reader_refuses_a_token_of_another_size(segment: Segment) -> None:
    segment.seal()
    pid, fd, size = segment.token()
    with pytest.raises(SegmentError, match="token says"):
        open_segment(pid, fd, size + 1)


def test_a_closed_segment_is_gone_with_a_clear_error() -> None:
    segment = Segment.create(4096)
    segment.seal()
    token = segment.token()
    segment.close()
    segment.close()  # twice is fine
    with pytest.raises(SegmentError, match=f"fd {token[1]} of process {token[0]} is gone"):
        open_segment(*token)


def test_a_segment_of_a_process_that_ended_is_gone() -> None:
    proc = run_python(HOLDER, 1 << 16, stdin=subprocess.PIPE)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        pid, fd, size = map(int, line.split())
        mapped = open_segment(pid, fd, size)
        assert bytes(mapped.view[:8]) == b"heldheld"
        proc.communicate("", timeout=TIMEOUT)
        assert proc.returncode == 0
        assert bytes(mapped.view[-4:]) == b"held"  # a mapping outlives its creator
        mapped.close()
        with pytest.raises(SegmentError, match="is gone"):
            open_segment(pid, fd, size)
    finally:
        proc.kill()
        proc.wait(TIMEOUT)


def test_views_outlive_close_and_keep_the_mapping(segment: Segment) -> None:
    segment.write([b"z" * segment.size])
    segment.seal()
    mapped = open_segment(*segment.token())
    part = mapped.view[100:200]
    consumer = memoryview(part)  # what an array loaded from the view holds
    mapped.close()
    segment.close()
    assert bytes(consumer) == b"z" * 100
    with pytest.raises(SegmentError, match="closed"):
        mapped.view  # noqa: B018


def test_an_unmapped_segment_frees_its_mapping_when_the_last_view_goes(segment: Segment) -> None:
    segment.seal()
    mapped = open_segment(*segment.token())
    view = mapped.view
    mapped.close()
    segment.close()
    maps_before = mapped_segments()
    del view
    assert mapped_segments() == maps_before - 1


def test_open_segments_counts_what_this_process_holds() -> None:
    count, size = open_segments()
    made = Segment.create(8192)
    assert open_segments() == (count + 1, size + 8192)
    made.close()
    assert open_segments() == (count, size)


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="size must be a positive int"):
        Segment.create(0)
    with pytest.raises(SegmentError, match="not a valid token"):
        open_segment(os.getpid(), 3, 0)


def test_a_forked_child_does_not_keep_its_parents_segments(segment: Segment) -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read)
            os.write(write, b"1" if os.path.exists(f"/proc/self/fd/{segment.fd}") else b"0")
        finally:
            os._exit(0)
    os.close(write)
    try:
        assert os.read(read, 1) == b"0"
    finally:
        os.close(read)
        os.waitpid(pid, 0)


def test_ppft_segments_0_switches_them_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PPFT_SEGMENTS", "0")
    assert not segments_available()
    monkeypatch.setenv("PPFT_SEGMENTS", "1")
    assert segments_available()
