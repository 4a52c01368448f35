"""`PipeChannel`: two pipes (one to read, one to write) that a `Stream` drives as it drives a socket.

The remote side of an ssh node (`ppft_worker.stdio`) speaks the protocol over the stdin and stdout that sshd
gave it, which are pipes: a descriptor for each direction, where a socket has one for both. This wraps the
pair in the few socket methods `Stream` calls (`recv`, `recv_into`, `send`, `sendmsg`, `fileno`, `close`)
and says which descriptor to watch for writing (`write_fd`); everything else about the stream (framing,
heartbeats, the out buffer, backpressure) is the same code as over TCP.

Both descriptors are made non-blocking and their pipe buffers grown where the system allows (F_SETPIPE_SZ,
up to 1 MiB): a 64 KiB pipe costs a wake-up per 64 KiB of a large payload. It never blocks, never reads or
writes anything but what the stream asks, and raises the `OSError`s a socket would (EAGAIN as
`BlockingIOError`, a closed reader as `BrokenPipeError`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os

__all__ = ["PIPE_SIZE", "PipeChannel", "grow_pipe"]

PIPE_SIZE = 1 << 20
"""The pipe buffer asked for (Linux caps it at /proc/sys/fs/pipe-max-size, 1 MiB by default)."""

_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux; elsewhere the call fails and nothing changes
_IOV_MAX = 512


def grow_pipe(fd: int, size: int = PIPE_SIZE) -> None:
    """Ask for a pipe buffer of `size` bytes on `fd` (best effort: nothing happens for a non-pipe, on a
    system without F_SETPIPE_SZ, or beyond the system's limit)."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, _F_SETPIPE_SZ, size)


class PipeChannel:
    """A read descriptor and a write descriptor, seen as one non-blocking connected socket."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd
        self.closed = False
        for fd in (read_fd, write_fd):
            os.set_blocking(fd, False)
            grow_pipe(fd)

    def fileno(self) -> int:
        """The descriptor to watch for reading (`Stream` registers `write_fd` for writing)."""
        return self.read_fd

    def setblocking(self, flag: bool) -> None:
        for fd in (self.read_fd, self.write_fd):
            os.set_blocking(fd, flag)

    def setsockopt(self, *args: object) -> None:
        raise OSError("a pipe has no socket options")

    def recv(self, size: int) -> bytes:
        return os.read(self.read_fd, size)

    def recv_into(self, view: memoryview) -> int:
        return os.readv(self.read_fd, [view])

    def send(self, data: bytes | memoryview) -> int:
        return os.write(self.write_fd, data)

    def sendmsg(self, parts: list[bytes | memoryview]) -> int:
        return os.writev(self.write_fd, parts[:_IOV_MAX])

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for fd in {self.read_fd, self.write_fd}:
            with contextlib.suppress(OSError):
                os.close(fd)
