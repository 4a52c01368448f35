"""A job's output on the caller's side: its text on the caller's own streams, as the job wrote it, once.

A job's result carries what it wrote (`Result.output`) and which parts of it went to stderr
(`Result.stderr_spans`, UTF-8 byte offsets; empty from a version-1 peer, whose jobs' text is all stdout).

* `write_output` puts one job's text on `sys.stdout` and `sys.stderr` as the job wrote it: each part on its
  stream, in order, the whole text under one lock so that two jobs' texts never mix, the stream flushed at
  each switch so that the two interleave as they did in the job. It is called on the thread that asks for
  the job's value (or runs its classic callback), as ppft 1.7 printed it; `Unshown` keeps the text of every
  finished job nobody asked about yet, so that `Server.destroy()` (and interpreter exit) shows it, once.
Nothing here ever runs on the I/O thread. Live output (`live`) prints through `write_lines`, under the same
lock, so that live lines and a job's replayed text never mix either.
"""

from __future__ import annotations

import codecs
import logging
import sys
import threading
import weakref
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

__all__ = ["Unshown", "segments", "write_lines", "write_output"]

log = logging.getLogger("ppft.client")

_write_lock = threading.Lock()  # one job's text at a time on the caller's streams
_broken_logged = False


def segments(output: str, spans: Sequence[tuple[int, int]], skip: int = 0) -> list[tuple[int, str]]:
    """`output` cut into `(stream, text)` parts in order (0 stdout, 1 stderr), from byte `skip` of its UTF-8
    encoding on; `spans` are its stderr parts as (start, end) byte offsets."""
    if not spans and not skip:
        return [(0, output)] if output else []
    cut: Callable[[Any, int, int], str]
    if output.isascii():  # byte offsets are character offsets
        text: Any = output
        cut = _str_cut
    else:
        text = output.encode("utf-8", "surrogatepass")
        cut = _bytes_cut
    size = len(text)
    parts: list[tuple[int, str]] = []
    pos = 0
    for start, end in (*spans, (size, size)):
        for stream, low, hi in ((0, pos, start), (1, start, end)):
            lo = max(low, skip)
            if hi > lo:
                parts.append((stream, cut(text, lo, hi)))
        pos = end
    return parts


def _str_cut(text: str, lo: int, hi: int) -> str:
    return text[lo:hi]


def _bytes_cut(data: bytes, lo: int, hi: int) -> str:
    piece = data[lo:hi]
    try:
        return piece.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:  # a peer's span that cuts a character (the decoder refuses those)
        return piece.decode("utf-8", "replace")


def write_output(output: str, spans: Sequence[tuple[int, int]] = ()) -> None:
    """Write one job's output on the caller's streams, as the job wrote it; never raises."""
    parts = segments(output, spans)
    if not parts:
        return
    with _write_lock:
        _write_parts(parts, flush_last=len(parts) > 1)


def write_lines(lines: Iterable[tuple[int, str]]) -> None:
    """Write `(stream, text)` lines (stream 0 stdout, 1 stderr) on the caller's streams, under the lock that
    keeps jobs' texts apart, flushing the last stream written (the live printer's way)."""
    with _write_lock:
        _write_parts(lines, flush_last=True)


def _write_parts(parts: Iterable[tuple[int, str]], *, flush_last: bool) -> None:
    last: TextIO | None = None
    for stream, text in parts:
        target = sys.stdout if stream == 0 else sys.stderr
        if target is not last and last is not None:
            _flush(last)
        last = target
        if target is not None:
            _write(target, text)
    if flush_last and last is not None:
        _flush(last)


def _write(target: TextIO, text: str) -> None:
    try:
        target.write(text)
    except UnicodeEncodeError:
        _write_encoded(target, text)
    except (OSError, ValueError) as exc:
        _broken(target, exc)


def _write_encoded(target: TextIO, text: str) -> None:
    """`text` that the stream's encoding refuses: its bytes as the job wrote them (surrogate escapes become
    the bytes again) where the stream has a `buffer`, else with the refused characters escaped."""
    encoding = getattr(target, "encoding", None) or "utf-8"
    try:
        data = text.encode(encoding, _ERRORS)
        buffer = getattr(target, "buffer", None)
        if buffer is not None:
            target.flush()
            buffer.write(data)
            buffer.flush()
        else:
            target.write(data.decode(encoding, "replace"))
    except (OSError, ValueError, LookupError, UnicodeError) as exc:
        _broken(target, exc)


def _escape_or_restore(exc: UnicodeError) -> tuple[bytes | str, int]:
    """A codec error handler: a surrogate escape (U+DC80..U+DCFF, a byte the job wrote that was not UTF-8)
    becomes that byte again; any other character the encoding lacks, a backslash escape."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    out = bytearray()
    for char in exc.object[exc.start : exc.end]:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(code - 0xDC00)
        else:
            out += char.encode("ascii", "backslashreplace")
    return bytes(out), exc.end


_ERRORS = "ppft.output"
codecs.register_error(_ERRORS, _escape_or_restore)


def _flush(target: TextIO) -> None:
    try:
        target.flush()
    except (OSError, ValueError) as exc:
        _broken(target, exc)


def _broken(target: TextIO, exc: BaseException) -> None:
    global _broken_logged
    if not _broken_logged:
        _broken_logged = True
        log.info("cannot write jobs' output to %s (%s): it is dropped", getattr(target, "name", target), exc)


class Unshown:
    """The text of finished jobs nobody has asked about yet, in the order they finished.

    The I/O thread adds a job that wrote something as it finishes it (under the jobs' lock); the job leaves
    when its output is shown or handed over (`sresult`). `take_all` (at `destroy`) gives what is left. Jobs
    are held weakly: a job the caller dropped still has its text shown, but keeps no value alive. Entries
    are numbered (the number kept on the job), never keyed by `id()`, which a later job may reuse."""

    __slots__ = ("_entries", "_next")

    def __init__(self) -> None:
        self._entries: dict[int, tuple[weakref.ref[Any], str, Sequence[tuple[int, int]]]] = {}
        self._next = 0

    def __bool__(self) -> bool:
        return bool(self._entries)

    def add(self, job: Any, output: str, spans: Sequence[tuple[int, int]]) -> None:
        """With the jobs' lock held."""
        self._next += 1
        job._unshown_key = self._next
        self._entries[self._next] = (weakref.ref(job), output, spans)

    def discard(self, job: Any) -> None:
        """With the jobs' lock held."""
        key = job._unshown_key
        if key:
            self._entries.pop(key, None)
            job._unshown_key = 0

    def take_all(self) -> list[tuple[str, Sequence[tuple[int, int]]]]:
        """Every text left (with the jobs' lock held); each job counts as shown from now on."""
        entries = list(self._entries.values())
        self._entries.clear()
        texts = []
        for ref, output, spans in entries:
            job = ref()
            if job is not None:
                if job._replayed:
                    continue
                job._replayed = True
                job._unshown_key = 0
            texts.append((output, spans))
        return texts
