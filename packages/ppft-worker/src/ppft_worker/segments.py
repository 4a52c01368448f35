"""Shared memory segments between the processes of one machine and one user: a memfd, sealed, opened by token.

A local pool and its own worker processes pass large buffers through these instead of their pipes: the
process that has the bytes creates a `Segment` (an anonymous memory file, `memfd_create`), writes them into it
(the one copy), seals it so that readers can trust it never changes, and sends its `token()`, (pid, fd,
size), through the pipe; the other process opens `/proc/{pid}/fd/{fd}` read-only and maps it
(`open_segment`), and hands views of that mapping to `pickle.loads(..., buffers=...)` (no copy after).

Lifetimes: a segment lives while its creator keeps its fd open or anybody maps it; the kernel frees it when
the last of them goes, so a process that dies leaks nothing (its fds close and its mappings go with it). The
creator keeps the segment open until the reader has mapped it (the protocol above this module says when),
then closes it. A mapping is unmapped when the last object using it goes (a numpy array loaded from it keeps
it alive, so `close()` never fails, even while such arrays live): on Python 3.13+ an `mmap.mmap` that holds
no fd of its own (`trackfd=False`), before 3.13 a libc `mmap` through `ctypes` whose unmapping is tied to the
views' lifetime (an `mmap.mmap` there would hold a duplicate fd for as long as its views live).

Linux only (memfd and /proc): `segments_available()` says whether this machine has them and the user did not
switch them off (`PPFT_SEGMENTS=0`); callers send buffers through their pipes otherwise. This module never
pickles, never talks to a peer, and never maps anything writable in a reader.
"""

from __future__ import annotations

import os
import sys

from ppft_protocol.cpython import allocate_lock, reinit_after_fork

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = [
    "ENV",
    "Mapped",
    "Segment",
    "SegmentError",
    "open_segment",
    "open_segments",
    "segments_available",
]

ENV = "PPFT_SEGMENTS"
"""`PPFT_SEGMENTS=0` switches shared segments off: every buffer goes through the pipes."""

_PAGE = 4096


class SegmentError(OSError):
    """A shared segment cannot be made, sealed or opened (it is gone, or is not what its token says)."""


def segments_available() -> bool:
    """Whether shared segments can be used here: Linux with `os.memfd_create` and /proc, and not switched
    off with `PPFT_SEGMENTS=0`."""
    if os.environ.get(ENV, "").strip() == "0":
        return False
    return sys.platform.startswith("linux") and hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")


# -- counting: what this process holds, for the status figures ----------------------------------------------

_open = [0, 0]  # segments this process created and has not closed: count, bytes
_fds: set[int] = set()  # their fds
_counting = allocate_lock()  # segments are made and closed by several threads (submit, the I/O thread)


def _after_fork_in_child() -> None:
    """A forked child does not keep its parent's segments alive: it closes the fds it inherited (a memfd's
    CLOEXEC closes it at exec, not at fork)."""
    for fd in _fds:
        try:
            os.close(fd)
        except OSError:
            pass
    _fds.clear()
    _open[0] = _open[1] = 0


if hasattr(os, "register_at_fork"):
    reinit_after_fork(_counting)
    os.register_at_fork(after_in_child=_after_fork_in_child)


def open_segments() -> tuple[int, int]:
    """How many segments this process created and has not closed yet, and their bytes."""
    return _open[0], _open[1]


# -- mapping ------------------------------------------------------------------------------------------------


def _flags(writable: bool, private: bool) -> tuple[int, int]:
    """(prot, flags) of a mapping: private ones are copy-on-write, and not populated (that would copy every
    page); shared ones are populated at once (one call instead of a page fault per 64 KiB)."""
    import mmap  # noqa: PLC0415

    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    if private:
        return prot, mmap.MAP_PRIVATE
    return prot, mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)


def _map_with_mmap(fd: int, size: int, writable: bool, private: bool = False) -> memoryview:
    """Python 3.13+: an `mmap.mmap` without an fd of its own; it unmaps when its last view goes."""
    import mmap  # noqa: PLC0415 - loaded on first use, never on a worker's way to its first result

    prot, flags = _flags(writable, private)
    region = mmap.mmap(fd, size, flags=flags, prot=prot, trackfd=False)  # type: ignore[call-arg]
    view = memoryview(region)
    return view if writable else view.toreadonly()


_libc: list[tuple[Callable[..., int | None], Callable[..., int]]] = []


def _libc_mmap() -> tuple[Callable[..., int | None], Callable[..., int]]:
    if not _libc:
        import ctypes  # noqa: PLC0415 - only Pythons before 3.13, on first use

        libc = ctypes.CDLL(None, use_errno=True)
        mmap_ = libc.mmap
        mmap_.restype = ctypes.c_void_p
        c_int = ctypes.c_int
        mmap_.argtypes = [ctypes.c_void_p, ctypes.c_size_t, c_int, c_int, c_int, ctypes.c_long]  # off_t: long
        munmap = libc.munmap
        munmap.restype = ctypes.c_int
        munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        _libc.append((mmap_, munmap))
    return _libc[0]


def _map_with_ctypes(fd: int, size: int, writable: bool, private: bool = False) -> memoryview:
    """Before Python 3.13: libc's `mmap`; a `ctypes` array over the mapping exports the views, and the
    mapping is unmapped (`munmap`) when that array, which every view keeps alive, goes."""
    import ctypes  # noqa: PLC0415
    import weakref  # noqa: PLC0415

    mmap_, munmap = _libc_mmap()
    prot, flags = _flags(writable, private)
    address = mmap_(None, size, prot, flags, fd, 0)
    if address is None or address == ctypes.c_void_p(-1).value:
        err = ctypes.get_errno()
        raise OSError(err, f"mmap of {size} bytes: {os.strerror(err)}")
    array = (ctypes.c_char * size).from_address(address)
    finalizer = weakref.finalize(array, munmap, address, size)
    finalizer.atexit = False  # at exit the process's mappings go with it; views may still be in use then
    view = memoryview(array).cast("B")
    return view if writable else view.toreadonly()


_map = _map_with_mmap if sys.version_info >= (3, 13) else _map_with_ctypes


# -- the creator's side -------------------------------------------------------------------------------------


def _seal_flags() -> int:
    import fcntl  # noqa: PLC0415

    return fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL


class Segment:
    """A shared memory segment this process created: `create`, fill (`view`, or `write`), `seal`, send its
    `token()`, and `close()` once the reader has mapped it (or the job is over)."""

    __slots__ = ("_view", "fd", "ino", "sealed", "size")

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size
        self.ino = os.fstat(fd).st_ino  # tells this segment from a later one that reuses its fd number
        self.sealed = False
        self._view: memoryview | None = None

    @classmethod
    def create(cls, size: int, name: str = "ppft") -> Segment:
        """A new segment of `size` bytes (zeros), writable until sealed. Raises `SegmentError` when the
        machine refuses it (out of memory or of fds), `ValueError` for a size below 1."""
        if type(size) is not int or size < 1:
            raise ValueError(f"size must be a positive int (bytes), got {size!r}")
        try:
            fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        except (AttributeError, OSError) as exc:
            raise SegmentError(f"cannot create a shared segment of {size} bytes: {exc}") from exc
        try:
            os.ftruncate(fd, size)
        except OSError as exc:
            os.close(fd)
            raise SegmentError(f"cannot size a shared segment to {size} bytes: {exc}") from exc
        with _counting:
            _open[0] += 1
            _open[1] += size
            _fds.add(fd)
        return cls(fd, size)

    @property
    def view(self) -> memoryview:
        """The segment's bytes: a writable memoryview until `seal()`, read-only after it (mapped on first
        use)."""
        view = self._view
        if view is None:
            if self.fd < 0:
                raise SegmentError("the shared segment is closed")
            try:
                view = self._view = _map(self.fd, self.size, not self.sealed)
            except OSError as exc:
                raise SegmentError(f"cannot map a shared segment of {self.size} bytes: {exc}") from exc
        return view

    def forget_view(self) -> None:
        """Drop this object's reference to its mapping: the views already taken keep it alive, and it goes
        with the last of them (`view` maps again if asked)."""
        self._view = None

    def write(self, buffers: Sequence[memoryview | bytes], offset: int = 0) -> None:
        """Write `buffers` one after the other from `offset`, without mapping the segment (the kernel copies
        them in: the one copy, and no page faults). Raises `SegmentError` past the end or once sealed."""
        if self.sealed or self.fd < 0:
            raise SegmentError("a sealed or closed shared segment cannot be written")
        total = sum(memoryview(b).nbytes for b in buffers)
        if offset < 0 or offset + total > self.size:
            raise SegmentError(f"{total} bytes at {offset} do not fit a shared segment of {self.size} bytes")
        pending = [memoryview(b).cast("B") for b in buffers if len(b)]
        while pending:
            done = os.pwritev(self.fd, pending[:1024], offset)
            offset += done
            while pending and done >= pending[0].nbytes:
                done -= pending[0].nbytes
                pending.pop(0)
            if done:
                pending[0] = pending[0][done:]

    def seal(self) -> None:
        """Drop the writable mapping and seal the segment: from now on nobody can change, grow or shrink it,
        so readers may trust what they map. Raises `SegmentError` while a writable view of it is still in
        use (release it first). Idempotent."""
        if self.sealed:
            return
        import fcntl  # noqa: PLC0415

        view, self._view = self._view, None
        if view is not None:
            view.release()
            del view
        try:
            fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, _seal_flags())
        except OSError as exc:
            raise SegmentError(
                f"cannot seal a shared segment of {self.size} bytes: {exc} (a writable view of it is still "
                "in use: release every view of Segment.view before seal())"
            ) from exc
        self.sealed = True

    def token(self) -> tuple[int, int, int]:
        """(pid, fd, size): what another process of this user passes to `open_segment` while the segment is
        open here."""
        return os.getpid(), self.fd, self.size

    def close(self) -> None:
        """Close the fd and drop this object's mapping (the memory goes when the last mapping of it in any
        process goes). Safe to call twice."""
        fd, self.fd = self.fd, -1
        self._view = None
        if fd < 0:
            return
        with _counting:
            if fd not in _fds:
                return  # closed for us in a forked child
            _fds.discard(fd)
            _open[0] -= 1
            _open[1] -= self.size
        os.close(fd)

    def __repr__(self) -> str:
        state = "closed" if self.fd < 0 else "sealed" if self.sealed else "writable"
        return f"Segment(fd={self.fd}, size={self.size}, {state})"


# -- the reader's side --------------------------------------------------------------------------------------


class Mapped:
    """A segment of another process, mapped read-only: `view`; `close()` when done with it (the mapping
    stays while objects loaded from the view still use it, and goes with the last of them)."""

    __slots__ = ("_view", "size")

    def __init__(self, view: memoryview) -> None:
        self._view: memoryview | None = view
        self.size = view.nbytes

    @property
    def view(self) -> memoryview:
        if self._view is None:
            raise SegmentError("the mapped segment is closed")
        return self._view

    def close(self) -> None:
        self._view = None


def open_segment(pid: int, fd: int, size: int, writable: bool = False, ino: int | None = None) -> Mapped:
    """Map read-only the sealed segment of `size` bytes that process `pid` holds open as `fd` (its
    `Segment.token()`); `writable=True`: copy-on-write instead (writes stay in this process, and only the
    pages written are copied). `ino`: the segment's `Segment.ino`, checked when given (a segment closed
    and replaced by another under the same fd is then refused, not misread). Raises `SegmentError`,
    naming pid and fd, when it is gone (the process ended or closed it), is not a sealed segment, or has
    another size."""
    where = f"shared segment fd {fd} of process {pid}"
    if type(size) is not int or size < 1 or type(pid) is not int or type(fd) is not int or fd < 0:
        raise SegmentError(f"{where}: not a valid token (pid, fd, size {size!r})")
    try:
        rfd = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise SegmentError(
            f"{where} is gone (the process ended or closed it before this one opened it): the sender must "
            "keep a segment open until its reader has it"
        ) from exc
    except OSError as exc:
        raise SegmentError(f"cannot open {where}: {exc} (only one user's processes share them)") from exc
    try:
        import fcntl  # noqa: PLC0415

        try:
            seals = fcntl.fcntl(rfd, fcntl.F_GET_SEALS)
        except OSError:
            seals = 0
        want = _seal_flags()
        if seals & want != want:
            raise SegmentError(f"{where} is not a sealed shared segment: it is not read")
        stat = os.fstat(rfd)
        if ino is not None and stat.st_ino != ino:
            raise SegmentError(
                f"{where} is another segment now (the one of the token was closed): it is not read"
            )
        actual = stat.st_size
        if actual != size:
            raise SegmentError(f"{where} has {actual} bytes, its token says {size}: it is not read")
        try:
            view = _map(rfd, size, writable, writable)
        except OSError as exc:
            raise SegmentError(f"cannot map {where} ({size} bytes): {exc}") from exc
    finally:
        os.close(rfd)
    return Mapped(view)
