"""Direct worker links: a ppserver's worker processes taking this client's jobs without the ppserver between.

Through a ppserver a job crosses four processes (client -> ppserver -> worker -> ppserver -> client); on a
direct link it crosses two, as with local workers (docs/performance.md, "Direct worker links"):

    the node's link is up (protocol version 2, no live output asked, the ppserver runs our bytecode)
      --> one direct link per worker of the ppserver: connect --> handshake (our secret) --> `Attach`
          --> `Attached(id)`: the ppserver handed the socket to a new worker process of its own
              --> a second handshake, with that worker (it proves the same secret) --> its `NodeInfo`
              --> a `Link` with one worker, which the node dispatches to before its ppserver link
          --> `Bye("direct link refused: ...")`, or any end before `Attached`: none for `RETRY` s (more
              after each refusal in a row)

Which jobs go direct: those with no time limit (the ppserver's pool stops a job at its limit). The others go
through the ppserver as before. A job may use `put()` refs: they are sent to the ppserver only (a direct
link's `refs` stays None), once, and the ppserver passes each on to its direct workers as to its own; the
ppserver's link is sent what changed in the refs before any job goes on a direct link (`dispatch`), so a
ref's `Put` leaves before the jobs that use it (a direct worker waits for a ref that is still on its way). A
link takes only the part of the queue's head that it may run (`Head`), so jobs leave the queue in order.

What a worker cannot do, and what is done instead:

* It says nothing while it runs a job, so a direct link is never declared silent (no heartbeat timeout):
  the node's own link to the ppserver is the one whose silence says the machine is gone, and its end
  closes the direct links too. A worker that dies closes its socket, which ends its link at once.
* It reads nothing while it runs a job, so `terminate` of the job a direct worker may be running (the
  oldest it holds) asks the ppserver to stop that worker (`EndDirect`) and closes the link (a ppserver also
  stops the worker of a link its client closed, within seconds); a queued job gets a `Cancel`.
* A direct link lost with jobs hands them to the node's owner to run again, charged nothing (`on_rerun`):
  the ppserver is still there (its own link's loss is what charges a loss of the node). As in a pool, the
  job its worker may have been running (the oldest it held) is the suspect: it is marked `solo` and goes
  through the ppserver from then on, whose pool runs it alone and fails it with `WorkerLostError` (how its
  worker died) if it kills workers there too; the others go direct again. The link is opened again after a
  pause.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Any

from ppft_protocol import Attach, Attached, Connection, EndDirect, Established, Event, NodeInfo, Result, Role
from ppft_worker.runtime import (
    CONNECT_TIMEOUT,
    Dial,
    Link,
    Loop,
    Stream,
    Task,
    TaskQueue,
    Timer,
    job_limit,
    offer_aes_gcm,
)

from ..version import __version__

__all__ = ["RETRY", "RETRY_MAX", "DirectLinks", "Head", "fits_direct", "through_ppserver"]

log = logging.getLogger("ppft.remote")

RETRY = 2.0
"""Seconds before a ppserver that refused a direct link (or cannot make one) is asked again; doubled at each
refusal in a row, up to `RETRY_MAX`."""
RETRY_MAX = 600.0
_MAX_BACKOFF = 10.0
_NEVER_SILENT = 1e9  # a worker running a job sends no heartbeat: the node's own link watches the machine
_HEAD_SCAN = 1024  # tasks a `Head` looks at, at most, from the head of the queue (as many as a frame holds)


def _held(link: Link) -> int:
    return len(link.inflight)


def fits_direct(task: Task) -> bool:
    """Whether `task` may run on a direct link: no time limit, and not suspected of killing a worker (`solo`:
    such a job runs alone in the ppserver's pool); refs are fine (see the module's docstring)."""
    return not task.solo and job_limit(task) is None


def through_ppserver(task: Task) -> bool:
    """Whether `task` must go through the ppserver, when there are direct links."""
    return not fits_direct(task)


class Head:
    """`queue` as far as its first task that `fits` refuses (`TaskQueue`): what a link that may run only
    some jobs takes from (`Link.dispatch` and `take_batch` take only from the head)."""

    __slots__ = ("_left", "_queue")

    def __init__(
        self, queue: TaskQueue, fits: Callable[[Task], bool], most: int = _HEAD_SCAN, known: int = 0
    ) -> None:
        """`most`: tasks the head holds at most; `known`: how many at the head are known to fit already."""
        self._queue = queue
        end = min(len(queue), most, _HEAD_SCAN)
        n = min(known, end)
        while n < end and fits(queue[n]):
            n += 1
        self._left = n

    def __len__(self) -> int:
        return self._left

    def __getitem__(self, index: int) -> Task:
        if index >= self._left:
            raise IndexError(index)
        return self._queue[index]

    def popleft(self) -> Task:
        if not self._left:
            raise IndexError("the head is empty")
        self._left -= 1
        return self._queue.popleft()

    def extendleft(self, tasks: Any) -> None:  # `take_batch` putting back what it took, after a failure
        tasks = list(tasks)
        self._queue.extendleft(tasks)  # type: ignore[attr-defined]
        self._left += len(tasks)


class _Direct:
    """One direct link: its connection, from the dial through `Attached` to the worker's `Link`."""

    def __init__(self, owner: DirectLinks) -> None:
        self.owner = owner
        self.link: Link | None = None
        self.direct_id = 0
        self.closed = False
        self._dial: Dial | None = None
        self._stream: Stream | None = None

    def start(self) -> None:
        owner = self.owner
        self._dial = Dial(owner.loop, owner.address, owner.port, self._dialled, timeout=CONNECT_TIMEOUT)
        self._dial.start()

    def _connection(self) -> Connection:
        owner = self.owner
        return Connection(
            Role.CLIENT, owner.secret, allow_plain=owner.offer_plain, aes_gcm=offer_aes_gcm(),
            comment=f"ppft {__version__} client, direct link",
        )  # fmt: skip

    def _dialled(self, sock: socket.socket | None, reason: str) -> None:
        self._dial = None
        if self.closed:
            if sock is not None:
                sock.close()
            return
        if sock is None:
            self.owner.not_attached(self, reason)
            return
        # No heartbeat from us before `Attached`: the ppserver reads nothing after `Attach`, and a byte of
        # ours left unread would reach the worker as the start of our second handshake.
        self._stream = Stream(
            self.owner.loop, sock, self._connection(), peer=f"ppserver {self.owner.name}",
            on_event=self._attach_event, on_close=self._attach_closed, heartbeat_interval=_NEVER_SILENT,
            silence_timeout=_NEVER_SILENT,
        )  # fmt: skip

    def _attach_event(self, event: Event) -> None:
        stream = self._stream
        assert stream is not None
        if isinstance(event, Established):
            if event.version < 2:
                stream.close("direct links need protocol version 2")
                self.owner.not_attached(self, "the ppserver speaks protocol version 1 (ppft 2.0.0)")
                return
            stream.send(Attach())
        elif isinstance(event, Attached):
            self.direct_id = event.direct_id
            sock = stream.detach()
            if sock is None:
                self._stream = None
                self.owner.not_attached(self, "the connection broke as the ppserver handed it over")
                return
            peer = f"a direct worker of ppserver {self.owner.name}"
            self._stream = Stream(
                self.owner.loop, sock, self._connection(), peer=peer,
                on_event=self._event, on_close=self._closed, handshake_timeout=15.0,
                silence_timeout=_NEVER_SILENT,
            )  # fmt: skip
        # the ppserver's NodeInfo (it greets every client) says nothing a direct link needs

    def _attach_closed(self, reason: str) -> None:
        stream = self._stream
        self._stream = None
        if stream is not None and stream.bye_reason is not None:
            reason = stream.bye_reason or reason
        self.owner.not_attached(self, reason)

    def _event(self, event: Event) -> None:
        link = self.link
        if link is not None:
            link.handle(event)
        elif isinstance(event, NodeInfo):
            assert self._stream is not None
            owner = self.owner
            link = Link(f"{owner.name} (direct worker)", self._stream, event, on_results=owner.on_results,
                        on_requeue=owner.on_requeue)  # fmt: skip
            link.stops_running = False  # a worker reads nothing while it runs a job: `terminate` below
            self.link = link
            owner.attached(self)

    def _closed(self, reason: str) -> None:
        self._stream = None
        link = self.link
        self.link = None
        tasks = link.take_inflight() if link is not None else []
        self.owner.lost(self, link, tasks, reason)

    def terminate(self, task: Task) -> bool:
        """Stop `task` if this link holds it (see the module's text); False if it does not."""
        link = self.link
        if link is None or link.inflight.get(task.wire[0]) is not task:
            return False
        may_run = next(iter(link.inflight.values())) is task  # the oldest: the one the worker may be running
        link.terminate(task)  # off the books; a Cancel, which stops it if it has not started
        if may_run:
            self.owner.end_worker(self, "a job it was running was terminated")
        return True

    def close(self, reason: str) -> None:
        """End this link from our side (the worker exits: its socket is closed, with a Bye). Before the answer
        to `Attach`, without a word: the ppserver reads nothing more then, and the bytes of a Bye could reach
        the worker it hands the socket to as the start of a handshake."""
        self.closed = True
        if self._dial is not None:
            self._dial.cancel()
            self._dial = None
        stream = self._stream
        self._stream = None
        if stream is not None:
            stream.close(reason, bye=self.link is not None)


class DirectLinks:
    """A ppserver node's direct links (`RemoteNode.direct`): opened while its own link is up, used before
    it for the jobs that may go direct."""

    def __init__(
        self,
        loop: Loop,
        name: str,
        secret: bytes,
        *,
        on_results: Callable[[list[tuple[Task, Result]]], None],
        on_requeue: Callable[[list[Task]], None],
        on_rerun: Callable[[list[Task]], None],
        send_control: Callable[[EndDirect], bool],
    ) -> None:
        """`on_rerun(tasks)`: jobs a direct link held when it ended, to queue again, charged nothing.
        `send_control`: send a message on the node's own link to the ppserver (False if it is down)."""
        self.loop = loop
        self.name = name
        self.secret = secret
        self.on_results = on_results
        self.on_requeue = on_requeue
        self._on_rerun = on_rerun
        self._send_control = send_control
        self.address = ""
        self.port = 0
        self.offer_plain = False
        self.links: list[_Direct] = []
        self.ready: list[Link] = []  # the links that take jobs, in the order they came up
        self._done_before = 0  # jobs and job time of the links that ended
        self._time_before = 0.0
        self._wanted = 0
        self._timer: Timer | None = None
        self._backoff = 1.0
        self._refusal_logged = ""
        self._probing = False  # after a refusal, one link at a time until one is made
        self._retry = RETRY
        # per test (`fits_direct`, `through_ppserver`): the task at the queue's head when that many tasks from
        # it were found to pass (`_head`)
        self._known: dict[Callable[[Task], bool], tuple[Task, int]] = {}

    def open(self, sock: socket.socket | None, established: Established | None, count: int) -> None:
        """Open `count` direct links to the ppserver that `sock`, the node's own link, is connected to
        (its `established` handshake: protocol version 2 is needed; an unsealed channel is offered when that
        link is unsealed, and the ppserver decides as for it)."""
        self.close("the ppserver's link was made again")
        if sock is None or established is None or established.version < 2 or count <= 0:
            return
        try:
            self.address, self.port = (str(part) for part in sock.getpeername()[:2])  # type: ignore[assignment]
        except (OSError, ValueError):
            return
        self.port = int(self.port)
        self.offer_plain = not established.sealed
        self._wanted = count
        self._backoff = 1.0
        self._probing = False
        self._retry = RETRY
        self._fill()

    def _fill(self) -> None:
        self._timer = None
        wanted = min(self._wanted, len(self.links) + 1) if self._probing else self._wanted
        while len(self.links) < wanted:
            direct = _Direct(self)
            self.links.append(direct)
            direct.start()

    def _later(self, delay: float) -> None:
        if self._timer is None and self._wanted:
            self._timer = self.loop.call_later(delay, self._fill, self._timer_failed)

    def _timer_failed(self, exc: BaseException) -> None:
        self._timer = None  # the loop logged it; the next loss or `open` tries again

    # -- the links' reports ----------------------------------------------------------------------------

    def attached(self, direct: _Direct) -> None:
        assert direct.link is not None
        self.ready.append(direct.link)
        self._backoff = 1.0
        self._retry = RETRY
        if self._probing:
            self._probing = False
            self._fill()
        if self._refusal_logged:
            log.info("ppserver %s: direct links work again", self.name)
            self._refusal_logged = ""
        self.loop.wake()

    def not_attached(self, direct: _Direct, reason: str) -> None:
        """`direct` ended before its worker's link was made: a refusal, a ppserver that cannot, a failure."""
        self._drop(direct)
        if direct.closed:
            return
        self._probing = True
        if reason != self._refusal_logged:
            self._refusal_logged = reason
            log.info("ppserver %s: no direct link (%s); its jobs go through the ppserver, and it is asked "
                     "again in %.0f s", self.name, reason, self._retry)  # fmt: skip
        if self._timer is None:  # the links refused together count as one refusal
            self._later(self._retry)
            self._retry = min(RETRY_MAX, self._retry * 2)

    def lost(
        self, direct: _Direct, link: Link | None, tasks: list[Task], reason: str, *, replace: bool = False
    ) -> None:
        """`direct` ended after its worker's link was made, holding `tasks` in the order it was sent them;
        `replace`: even though it was closed from here (its worker was stopped for `terminate`)."""
        self._drop(direct)
        if link is not None:
            self._retire(link)
            with contextlib.suppress(ValueError):
                self.ready.remove(link)
        if tasks:
            self._known.clear()  # the heads found to fit: a task coming back may not fit any more
            if not direct.closed:  # its worker died, or its connection: see the module's text
                suspect = tasks[0]
                suspect.attempts += 1
                suspect.solo = True
                log.warning("lost a direct worker of ppserver %s with %d job(s): %s; they run again, the one "
                            "it may have been running through the ppserver", self.name, len(tasks),
                            reason)  # fmt: skip
            self._on_rerun(tasks)
        if replace or not direct.closed:
            self._later(self._backoff)
            self._backoff = min(_MAX_BACKOFF, self._backoff * 2)

    def _retire(self, link: Link) -> None:
        """Keep the figures of a link that ended (`jobs_done`, `job_time`)."""
        self._done_before += link.jobs_done
        self._time_before += link.job_time

    def _drop(self, direct: _Direct) -> None:
        with contextlib.suppress(ValueError):
            self.links.remove(direct)

    def end_worker(self, direct: _Direct, reason: str) -> None:
        """Stop `direct`'s worker now, running job and all: the ppserver kills it (`EndDirect`), and the link
        is closed from here, which the ppserver acts on too. Its other jobs run again; a new link follows."""
        self._send_control(EndDirect((direct.direct_id,)))
        link = direct.link
        tasks = link.take_inflight() if link is not None else []
        direct.close(reason)
        self.lost(direct, link, tasks, reason, replace=True)

    # -- the node's use --------------------------------------------------------------------------------

    def dispatch(self, queue: TaskQueue, through: Link) -> int:
        """Send the jobs at the head of `queue` that may go direct, while the links have room, the least busy
        link first (so that two slow jobs run side by side, not one behind the other); then, to the ppserver
        (`through`), the head of what may not, in queue order. While there are fewer direct links than the
        ppserver has workers (not all made yet, or refused), a direct link takes a job only when it holds
        none, and the ppserver takes the others, any of them: nothing waits behind a running job on a direct
        worker while a worker of the ppserver idles."""
        sent = 0
        ready = self.ready
        if ready:
            through.sync_refs()  # a ref's Put leaves on the ppserver's link before a job using it goes direct
        partial = len(ready) < through.workers
        if ready:
            for link in sorted(ready, key=_held) if len(ready) > 1 else ready:
                if not queue:
                    return sent
                if partial and link.inflight:
                    continue
                head = self._head(queue, fits_direct, 1 if partial else _HEAD_SCAN)
                if not head:
                    break
                sent += link.dispatch(head)
        if not queue:
            return sent
        if partial:
            return sent + through.dispatch(queue)
        head = self._head(queue, through_ppserver, _HEAD_SCAN)
        return sent + through.dispatch(head) if head else sent

    def _head(self, queue: TaskQueue, fits: Callable[[Task], bool], most: int) -> Head:
        """`Head(queue, fits, most)`, without looking again at the tasks a former head found to pass while
        the same task leads the queue (tasks leave it at its head, and come back there): a link with no room
        costs a look at one task, not at thousands, each time the queue is dispatched."""
        first = queue[0]
        known_first, known = self._known.get(fits, (None, 0))
        head = Head(queue, fits, most, known if first is known_first else 0)
        if len(head) >= known or first is not known_first:
            self._known[fits] = first, len(head)
        return head

    @property
    def jobs_done(self) -> int:
        """Jobs done on the direct links, those that ended included."""
        return self._done_before + sum(link.jobs_done for link in self.ready)

    @property
    def job_time(self) -> float:
        return self._time_before + sum(link.job_time for link in self.ready)

    @property
    def inflight(self) -> int:
        return sum(len(link.inflight) for link in self.ready)

    def terminate(self, task: Task) -> bool:
        return any(direct.terminate(task) for direct in list(self.links))

    def take_inflight(self) -> list[Task]:
        tasks: list[Task] = []
        for link in self.ready:
            tasks += link.take_inflight()
        return tasks

    def close(self, reason: str) -> None:
        """End every direct link (their jobs are not handed back: `take_inflight` first)."""
        self._wanted = 0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._known.clear()
        for direct in list(self.links):
            if direct.link is not None:
                self._retire(direct.link)
            direct.close(reason)
        self.links.clear()
        self.ready.clear()
