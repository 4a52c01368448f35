"""What an authenticated peer may send a ppserver, and the limits it is held to.

A peer that proved the secret can run any code here, so none of this is a defence against malice: it keeps a
buggy or hostile peer from ending or starving the ppserver, which serves everyone else. Whatever breaks a
rule (`PeerError`) closes that one session with a `Bye` naming the rule; nothing it sent is half-applied.

- A client sends function bodies, jobs, cancels, stats requests and heartbeats. Results are not its to send.
  `Attach` (give this connection to a direct worker) only as the first message of a new connection, and
  nothing after it until the answer; `EndDirect` on any other of its connections.
- A dial-in worker first says how many workers it brings (a NodeInfo of kind "worker"), then sends results;
  it never submits jobs: holding the workers secret lets it run jobs, not have them run.
- A job id is unique among the client's jobs not answered yet; a job names a function sent before it. A
  function body whose digest does not match it is refused (the jobs naming that digest fail, saying why).
- Counts stay within what one machine can be: at most `MAX_DIALIN_WORKERS` workers per dial-in connection.
- Memory per session is bounded: function bodies by the budget both ends count on version 2, and by count
  and bytes on version 1 (else the session is closed, and the client reconnects and starts afresh);
  queued jobs and unsent results by backpressure (its socket is not read while it is over
  `NodeServer.queue_cap`, `MAX_QUEUED_BYTES` or `MAX_UNSENT`; nothing is dropped).

This module holds the rules and the function table; it does no I/O.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Protocol

from ppft_protocol import FunctionBody, JobBatch, NodeInfo, PPFTError, Result, printable
from ppft_worker.runtime import CANCELLED_TYPE, MAX_BATCH, WORKER_REFUSED, BodyTable

if TYPE_CHECKING:
    from ppft_protocol import Event
    from ppft_worker.runtime import Stream

__all__ = [
    "CANCELLED_MESSAGE",
    "MAX_DIALIN_WORKERS",
    "MAX_PENDING_LIMITS",
    "MAX_QUEUED_BYTES",
    "MAX_SESSION_FUNCTIONS",
    "MAX_SESSION_FUNCTION_BYTES",
    "MAX_UNSENT",
    "TERMINATED_MESSAGE",
    "WORKER_REFUSED",
    "FunctionTable",
    "PeerError",
    "auto_queue_cap",
    "cancelled",
    "check_jobs",
    "check_node_info",
    "no_workers_admitted",
    "not_for_role",
    "short_reason",
    "shown",
]

MAX_DIALIN_WORKERS = 65536
"""Workers one dial-in connection may bring (`ppft-worker -w`): more is a bug, not a machine."""

MAX_SESSION_FUNCTIONS = 65536
"""Distinct function bodies one session may send; each stays until the session ends."""

MAX_SESSION_FUNCTION_BYTES = 256 << 20
"""Bytes of function bodies (sources, pickled callables) one session may send."""

MAX_QUEUED_BYTES = 256 << 20
"""A client whose queued jobs' arguments reach about this many bytes is not read until half of them ran."""

MAX_UNSENT = 64 << 20
"""A client that leaves this many bytes of results unread is not read until half of them went out."""

MAX_PENDING_LIMITS = 1 << 16
"""Time limits (`JobLimits`) a client may send for jobs it has not sent yet: a limit precedes its job."""

TERMINATED_MESSAGE = "terminated by its client"
"""The error message of a job answered as cancelled because its client terminated it (`Terminate`)."""

CANCELLED_MESSAGE = "cancelled before it started"
"""The error message of a job answered as cancelled (as a worker answers it)."""

_QUEUE_CAP_MIN = 4096


class PeerError(PPFTError):
    """An authenticated peer broke a rule of its role: its session is closed, with this message."""


class _Session(Protocol):
    bodies: BodyTable
    body_bytes: int
    stream: Stream


def auto_queue_cap(workers: int) -> int:
    """The default cap on a client's queued jobs: twice what a well-behaved client keeps in flight with a
    ppserver of `workers` workers (its window: two frames of `MAX_BATCH` tiny jobs per worker), so that one
    never waits for it; at least 4096."""
    return max(_QUEUE_CAP_MIN, 4 * MAX_BATCH * workers)


def cancelled(job_id: int, message: str) -> Result:
    """The answer to a job that was cancelled before it ran."""
    return Result(job_id, False, error_type=CANCELLED_TYPE, error_message=message)


def check_node_info(info: NodeInfo) -> None:
    """A dial-in worker's NodeInfo, refused when its worker count is not one a machine can have."""
    if info.workers > MAX_DIALIN_WORKERS:
        raise PeerError(
            f"a dial-in worker announced {info.workers} workers; at most {MAX_DIALIN_WORKERS} are accepted "
            f"from one connection (start several ppft-worker processes instead)"
        )


def check_jobs(batch: JobBatch, added: int) -> str:
    """Why the ids of `batch`, of which only `added` were new, are refused."""
    ids = [job.job_id for job in batch.jobs]
    twice = [job_id for job_id, n in Counter(ids).items() if n > 1]
    if twice:
        return f"job id {twice[0]} appears twice in one JobBatch: a job id is unique among the jobs in flight"
    return (
        f"{len(ids) - added} job id(s) of a JobBatch (ids {ids[0]}..{ids[-1]}) belong to jobs still in "
        f"flight on this connection: a job id may be used again only once its job was answered"
    )


def not_for_role(event: Event, role: str) -> str:
    name = type(event).__name__
    if name in ("ResultBatch", "RawResults") and role == "client":
        return "a client sent results (ResultBatch): results come from workers; a client sends jobs"
    if name in ("JobBatch", "FunctionBody", "Cancel", "JobLimits", "Terminate", "EndDirect") and (
        role == "dial-in worker"
    ):
        return f"a dial-in worker sent {name}: a worker runs jobs, it does not submit or cancel them"
    if name == "NodeInfo":
        kind = getattr(event, "kind", "?")
        return f"a {role} said it was a {shown(kind)} (NodeInfo kinds a ppserver takes: 'client', 'worker')"
    return f"a {role} does not send {name} to a ppserver"


def no_workers_admitted(workers_secret: bool) -> str:
    if workers_secret:
        return (
            "this ppserver admits only dial-in workers that prove its workers secret, which a ppft 2.0 "
            "worker cannot do: upgrade ppft on the worker's machine"
        )
    return (
        "this ppserver admits no dial-in workers: start it with --workers-secret-file PATH (workers then "
        "prove that secret) or --accept-workers (the client secret admits workers too)"
    )


def shown(text: object, limit: int = 60) -> str:
    """Text a peer chose, as it may appear in a log line or a Bye: quoted, escaped and cut
    (`ppft_protocol.printable`)."""
    return f"'{printable(str(text), limit)}'"


def short_reason(reason: str) -> str:
    """The kind of a refusal, for counting: its reason up to the first detail."""
    for mark in (":", " ("):
        cut = reason.find(mark)
        if cut > 0:
            reason = reason[:cut]
    return reason[:80]


def _size(body: FunctionBody) -> int:
    return len(body.name) + len(body.pickled) + sum(map(len, body.sources)) + sum(map(len, body.imports))


class FunctionTable:
    """The function bodies sessions send, into each session's `BodyTable` (ppft_worker.runtime.intake), which
    checks every body against its digest (a mismatch is refused and fails the jobs that name it) and, on a
    version-2 connection, forgets the oldest beyond the budget both ends count (`ppft_protocol.BodyLedger`:
    the client sends a forgotten body again). A version-1 connection keeps every body until it closes, so
    there the count and bytes are capped, and a session over either is closed."""

    def add(self, session: _Session, body: FunctionBody) -> None:
        table = session.bodies
        version = session.stream.conn.version
        if version >= 2 or table.get(body.digest) is not None:
            table.add(body, version)
            return
        size = _size(body)
        count = len(table)
        if count >= MAX_SESSION_FUNCTIONS or session.body_bytes + size > MAX_SESSION_FUNCTION_BYTES:
            raise PeerError(
                f"this connection sent {count} functions ({session.body_bytes} bytes): the limit is "
                f"{MAX_SESSION_FUNCTIONS} functions and {MAX_SESSION_FUNCTION_BYTES >> 20} MiB per "
                f"connection of protocol version 1, which keeps each until it closes; a new connection "
                f"starts afresh"
            )
        if table.add(body, version) is None:
            session.body_bytes += size

    def release(self, session: _Session) -> None:
        """The session ended: its bodies are let go of (a task still queued holds its own)."""
        session.bodies = BodyTable(session.bodies.peer)
        session.body_bytes = 0
