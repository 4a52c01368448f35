"""A direct worker's `put()` refs: what its ppserver holds, read from a pipe only when a job needs one.

    ppserver --Put / PutRefused / Release frames--> pipe (`ppft_worker.process.REFS_FD_ENV`) --> `RefChannel`
        `wait_for(ref_id)`: a job's arguments need a ref this worker does not hold (`refs.resolve`): read the
                            pipe until that ref (or its refusal, or its release) arrives, `WAIT` s at most
        `drain()`:          the worker waited `report.INTERVAL` for its client with nothing read: take in
                            what came (the releases above all), without waiting

A direct worker serves one client on the client's own connection, but the client sends its refs to the
ppserver only (once per ppserver, not once per worker): the ppserver passes each on to its direct workers
as it does to its pool's workers, a large object as a mapped pickle of its own shared segment (this is a
local process, a child of the ppserver: it maps it). The pipe is the ppserver's and this process's only, so
its frames are bare (`framing`'s header and `encode_message`'s body, protocol version 2): no handshake, no
seal. The client sends `Put` on its link to the ppserver before the job on the direct link, but the two
connections race: the job may come first, hence the wait.

Reading costs nothing on a job's way: the pipe is read only when a ref is missing, or when the worker is
idle. A channel that breaks (EOF, an error, frames that do not decode) is closed, and every later miss fails
with `RefUnavailableError` naming why; the worker goes on serving its client. This module never raises out
of `wait_for` anything but `RefUnavailableError`, and never writes.
"""

from __future__ import annotations

import os
import select
import time

from ppft_protocol import Put, PutRefused, Release, printable
from ppft_protocol.framing import FrameDecoder
from ppft_protocol.messages import decode_message

from ..errors import RefUnavailableError
from .loop import logger

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["WAIT", "RefChannel"]

WAIT = 30.0
"""Seconds a job waits for a ref its ppserver has not passed on yet, at most."""

_VERSION = 2
_READ = 1 << 20
_NO_LIMIT = 1 << 62  # the ppserver is trusted: its frames are the refs it holds, within --refs-memory


class RefChannel:
    """The read end `fd` of the ppserver's ref pipe; `apply` takes each message (the worker loop's `refs`)."""

    def __init__(self, fd: int, apply: Callable[[Put | Release | PutRefused], None]) -> None:
        self.fd = fd
        self.apply = apply
        self.broken = ""  # why the channel is closed ("" while it is open)
        self.known: set[int] = set()  # ref ids the ppserver put, refused or released: a miss waits for others
        self._decoder = FrameDecoder(_NO_LIMIT)
        try:
            os.set_inheritable(fd, False)  # a job's own child processes get none of it
            os.set_blocking(fd, False)
        except OSError as exc:
            self._break(f"its descriptor is unusable ({exc.strerror or exc})")

    def drain(self) -> None:
        """Take in whatever the ppserver sent, without waiting."""
        while self.fd >= 0 and self._read():
            pass

    def wait_for(self, ref_id: int) -> None:
        """Read until `ref_id` is known here (held, refused or released), `WAIT` s at most; raises
        `RefUnavailableError` saying why when it does not come."""
        self.drain()
        deadline = time.monotonic() + WAIT
        while ref_id not in self.known and self.fd >= 0:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RefUnavailableError(
                    f"ref {ref_id:#x} is not held by this direct worker: its ppserver did not pass it on "
                    f"within {WAIT:.0f} s (was it put() with the Server that submitted this job?)"
                )
            poller = select.poll()
            poller.register(self.fd, select.POLLIN)
            poller.poll(left * 1000)
            self.drain()
        if ref_id not in self.known and self.broken:
            raise RefUnavailableError(
                f"ref {ref_id:#x} is not held by this direct worker: its ref channel from the ppserver is "
                f"closed ({self.broken})"
            )

    def close(self) -> None:
        if self.fd >= 0:
            self._break("")

    def _read(self) -> bool:
        """One read; whether there may be more to read now."""
        try:
            data = os.read(self.fd, _READ)
        except BlockingIOError:
            return False
        except OSError as exc:
            self._break(f"it cannot be read: {exc.strerror or exc}")
            return False
        if not data:
            self._break("the ppserver closed it" + (" in the middle of a frame" if self._decoder.in_frame
                                                    else ""))  # fmt: skip
            return False
        try:
            for ftype, body in self._decoder.feed(data):
                message = decode_message(ftype, body, _VERSION)
                if not isinstance(message, (Put, Release, PutRefused)):
                    raise ValueError(f"{type(message).__name__} is no ref message")
                known = self.known
                if isinstance(message, Release):
                    known.update(message.ref_ids)
                else:
                    known.add(message.ref_id)
                self.apply(message)
        except Exception as exc:  # noqa: BLE001 - a channel that says nonsense is closed, the worker goes on
            self._break(f"it sent what is not a ref message: {printable(str(exc), 300)}")
            return False
        return len(data) == _READ

    def _break(self, why: str) -> None:
        fd, self.fd = self.fd, -1
        self.broken = why or "the direct worker is ending"
        if why:
            logger().warning("the ref channel from the ppserver is closed: %s", why)
        try:
            os.close(fd)
        except OSError:
            pass
