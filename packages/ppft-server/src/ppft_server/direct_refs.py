"""`RefPipe`: the ppserver's end of a direct worker's ref pipe, which passes it the clients' `put()` refs.

    client --Put / Release, on its session--> ppserver's `RefBook` --sync--> pool workers, dial-in links
                                                                 --sync--> `RefPipe` --> a direct worker

A direct worker runs the jobs of one client's direct link, and those jobs may use the refs the client put on
this ppserver (sent here once, not once per worker): each direct worker is sent them as a pool worker is,
with the book's `sync` (`local=True`: a large object goes as a mapped pickle of the book's shared segment,
which the worker, a child of this process, maps). The frames are bare (a frame header and the message's
body, protocol version 2, as `ppft_worker.process.refchannel` reads them): the pipe is this process's and
the worker's only. The worker reads the pipe when a job needs a ref it lacks, or when it idles.

Writes are non-blocking: what the pipe does not take now waits here, written as the loop finds the pipe
writable again (a worker that reads nothing for a while holds back at most the refs the book holds: views
of them, not copies). A pipe that breaks (the worker exited, a write error) is closed and forgotten: the
worker's jobs that need a ref it lacks then fail naming it, nothing else. Nothing here blocks the I/O thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections import deque

from ppft_protocol import Message
from ppft_protocol.framing import encode_frame_header
from ppft_protocol.messages import encode_message
from ppft_worker.runtime import Loop, RefBook, RefSync

__all__ = ["RefPipe", "ref_pipe"]

log = logging.getLogger("ppft.server")

_VERSION = 2
_PIPE_SIZE = 1 << 20  # asked of the kernel for each ref pipe (best effort): a small ref fits at once
_WRITEV_PARTS = 512


def ref_pipe() -> tuple[int, int]:
    """A new ref pipe: (the worker's read end, our write end, non-blocking), or (-1, -1) if the system has
    no descriptor left (the worker then has no refs: its jobs using one fail naming it)."""
    try:
        read, write = os.pipe()
    except OSError as exc:
        log.warning("no ref pipe for a direct worker (%s): its jobs using put() refs will fail", exc)
        return -1, -1
    os.set_blocking(write, False)
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)  # type: ignore[attr-defined,unused-ignore]
    return read, write


class RefPipe:
    """The write end `fd` of direct worker `pid`'s ref pipe, registered with `loop` while it has bytes to
    write; `state`: what the worker was sent of the book (`RefBook.sync`)."""

    version = _VERSION  # what `RefBook.sync` asks of a connection

    def __init__(self, loop: Loop, fd: int, pid: int) -> None:
        self.loop = loop
        self.fd = fd
        self.pid = pid
        self.state = RefSync()
        self._out: deque[memoryview] = deque()

    def send(self, message: Message) -> None:
        """Queue `message` (written by `flush`)."""
        parts = encode_message(message, _VERSION)
        out = self._out
        out.append(memoryview(encode_frame_header(message.TYPE, sum(map(len, parts)))))
        out.extend(part if isinstance(part, memoryview) else memoryview(part) for part in parts)

    def sync(self, book: RefBook) -> None:
        """Queue and write what the worker lacks of `book` (nothing if the book did not change)."""
        if self.fd >= 0 and self.state.generation != book.generation:
            book.sync(self, self.state, True)  # type: ignore[arg-type]  # a connection as far as sync goes
            self.flush()

    def flush(self) -> None:
        """Write what the pipe takes now; the rest when it is writable again."""
        out = self._out
        while out and self.fd >= 0:
            parts = [out[i] for i in range(min(len(out), _WRITEV_PARTS))]
            try:
                n = os.writev(self.fd, parts)
            except BlockingIOError:
                break
            except BrokenPipeError:  # the worker has closed its end: it is ending (its client left)
                log.debug("direct worker pid %d closed its ref pipe", self.pid)
                self.close()
                return
            except OSError as exc:
                self.close(f"it cannot be written ({exc.strerror or exc})")
                return
            while n:
                first = out[0]
                if n >= len(first):
                    n -= len(first)
                    out.popleft()
                else:
                    out[0] = first[n:]
                    n = 0
        if self.fd < 0:
            return
        if out:
            self.loop.add_writer(self.fd, self.flush, lambda exc: self.close("internal error (see the log)"))
        else:
            self.loop.remove_writer(self.fd)

    def close(self, why: str = "") -> None:
        """Close our end (the worker sees EOF); `why`, if not "", is logged."""
        fd, self.fd = self.fd, -1
        self._out.clear()
        if fd < 0:
            return
        self.loop.remove_writer(fd)
        with contextlib.suppress(OSError):
            os.close(fd)
        if why:
            log.warning("direct worker pid %d: its ref pipe is closed, its jobs using refs will fail: %s",
                        self.pid, why)  # fmt: skip
