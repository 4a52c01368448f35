"""`put()`: objects pickled once, shipped at most once to each node, and referred to by jobs as a `Ref`.

`Server.put(obj)` pickles `obj` on the caller's thread (so an object that cannot travel raises
`ShippingError` before anything is sent) and gives a `Ref`. The I/O thread then holds the pickle in the
scheduler's `RefBook` (`ppft_worker.runtime.refs`) and sends it to each node once, before the node's next
batch of jobs: local workers through their pipes, ppservers and dial-in workers' ppservers over their links
(`Put`, protocol version 2); a node connected later (a restarted ppserver, a replaced worker) gets it then.

A `Ref` pickles as `ppft_worker.process.resolve_ref(ref_id)`, so a job's arguments hold a few bytes for it
and the worker resolves it with one dict lookup. Pickling a `Ref` also notes it (`PICKLED`), so that
`make_job` can check the jobs that use refs (a released ref, another server's: `RefError`) and keep their
refs alive while they wait: a job without refs pays one truthiness test of a list.

`release()` (or the last handle's garbage collection, or `destroy()`) forgets the ref here and on every
node. This module never does I/O on the caller's thread: it hands the book's changes to the I/O thread.
"""

from __future__ import annotations

import itertools
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

from ppft_protocol import Pickled, Result
from ppft_worker.oob import dumps
from ppft_worker.process import drop_refs, hold_ref, holds_ref, resolve_ref
from ppft_worker.runtime import RefBook

from .errors import RefError
from .shipping import ShippingError, pickle_args, pickle_args_by, unpickle

__all__ = [
    "PICKLED",
    "Ref",
    "RefTable",
    "checked_refs",
    "forget_pickled",
    "inline_screen",
    "table_of",
    "without_refs",
]

_UNAVAILABLE = "ppft_worker.errors.RefUnavailableError"
_PRUNE_MIN = 4096  # jobs with refs tracked (`RefTable.use`) before the done ones are first dropped
_MAX_SIZE = (1 << 30) - 1024  # a ref travels in one frame (ppft_protocol.DEFAULT_MAX_FRAME_SIZE)


class _Local(threading.local):
    def __init__(self) -> None:
        self.refs: list[Ref] = []  # the refs this thread pickled since `make_job` last took them


_local = _Local()
PICKLED: list[int] = []  # one entry per ref pickled and not taken yet, any thread: `make_job`'s one test


class Ref:
    """A handle on an object given to `Server.put`: pass it in a job's arguments (at any depth) and the job
    gets the object. `release()` frees it everywhere; so does the garbage collection of its last handle,
    and the server's `destroy()`. Usable as a context manager: `with server.put(x) as ref:`."""

    __slots__ = ("__weakref__", "_reduced", "_table", "id", "size")

    def __init__(self, table: RefTable, ref_id: int, size: int) -> None:
        self._table = table
        self.id = ref_id
        self.size = size  # bytes of its pickle
        self._reduced = (resolve_ref, (ref_id,))

    def __reduce__(self) -> tuple[Any, tuple[int]]:
        _local.refs.append(self)
        PICKLED.append(0)
        return self._reduced

    def __copy__(self) -> Ref:
        return self  # a handle: its copies are itself (a reduce would resolve it here)

    def __deepcopy__(self, memo: object) -> Ref:
        return self

    def __repr__(self) -> str:
        state = "released" if self.released else f"{self.size} bytes"
        return f"<ppft Ref {self.id:#x}: {state}>"

    @property
    def released(self) -> bool:
        return self.id not in self._table.live

    def release(self) -> None:
        """Refuse it to new jobs at once (`RefError`), and free the object here and on every node as soon as
        the jobs already submitted with it are done (again: nothing)."""
        self._table.release(self.id)

    def __enter__(self) -> Ref:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class RefTable:
    """One `Server`'s refs: which are live, and the hand-over of the book's changes to the I/O thread."""

    def __init__(self, scheduler: Any) -> None:
        self._scheduler = scheduler
        self.book = RefBook()
        self.live: set[int] = set()
        # the jobs submitted with refs, weakly: appended without a lock (one list append per job), pruned
        # of the done ones in place as the list grows (`_prune`), read by `release`
        self._users: list[weakref.ref[Any]] = []
        self._prune_at = _PRUNE_MIN
        self._pruning = threading.Lock()
        # a submit's check of its refs and its `use` are one step for `release` (reentrant: a ref's last
        # handle may be collected, and released, by this very thread while it holds it)
        self.lock = threading.RLock()
        self._ids = itertools.count(1)
        # 32 random bits above a counter: ids unique across the clients of a ppserver
        self._id_prefix = int.from_bytes(os.urandom(4), "big") << 31
        scheduler.pool.refs = self.book

    def put(self, obj: object, protocol: int) -> Ref:
        """Pickle `obj` once, and give it to the I/O thread to send to the nodes."""
        try:
            data = _pickled(obj, protocol)
        except ShippingError as exc:
            forget_pickled()
            raise ShippingError(
                f"put() cannot ship this {type(obj).__name__}: neither pickle nor dill can serialize it "
                f"({exc.__cause__!r}); nothing was sent. Put plain data or instances of classes defined in "
                "a module"
            ) from exc.__cause__
        forget_pickled()  # refs inside `obj`: no job's
        size = len(data)
        if size > _MAX_SIZE:
            raise ValueError(
                f"put(): the object pickles to {size} bytes, more than one frame carries ({_MAX_SIZE}): "
                "split it into several objects"
            )
        ref_id = self._id_prefix | next(self._ids)
        ref = Ref(self, ref_id, size)
        self.live.add(ref_id)
        weakref.finalize(ref, self.release, ref_id)
        book = self.book

        def hold() -> None:
            book.put(ref_id, data)
            self._sync()

        self._scheduler.call(hold)
        return ref

    def use(self, job: object) -> None:
        """`job` was submitted with refs (its `refs`): a `release` of one of them waits until it is done."""
        users = self._users
        users.append(weakref.ref(job))
        if len(users) > self._prune_at:
            self._prune()

    def _prune(self) -> None:
        """Drop the jobs that are done or gone from `_users`, in place: what other threads append meanwhile
        lands after the part replaced, and is kept."""
        if not self._pruning.acquire(blocking=False):
            return  # another thread prunes
        try:
            users = self._users
            count = len(users)
            keep = [entry for entry in users[:count] if (job := entry()) is not None and not job.done()]
            users[:count] = keep
            self._prune_at = max(_PRUNE_MIN, 2 * len(keep))
        finally:
            self._pruning.release()

    def release(self, ref_id: int) -> None:
        """Refuse `ref_id` to new jobs, and forget it here and, from the I/O thread, on every node once the
        jobs submitted with it are done (any thread; again: nothing)."""
        live = self.live
        with self.lock:
            if ref_id not in live:
                return
            live.discard(ref_id)
            users = list(self._users)
        waiting = []
        for entry in users:
            job = entry()
            if job is not None and not job.done() and any(ref.id == ref_id for ref in job.refs):
                waiting.append(job)
        if not waiting or self._scheduler.exiting:
            self._forget(ref_id)
            return
        pending = {id(job) for job in waiting}
        lock = threading.Lock()

        def one_done(key: int) -> None:
            with lock:
                if key not in pending:
                    return
                pending.discard(key)
                last = not pending
            if last:
                self._forget(ref_id)

        for job in waiting:
            key = id(job)
            # done, or collected without ever being done (made, then never queued: a later argument of
            # the same `map` could not be pickled): either way it no longer holds the ref
            weakref.finalize(job, one_done, key).atexit = False
            job.add_done_callback(lambda _job, key=key: one_done(key))  # at once if it is done by now

    def _forget(self, ref_id: int) -> None:
        book = self.book
        scheduler = self._scheduler
        if scheduler.exiting:
            return

        def forget() -> None:
            book.release((ref_id,))
            drop_refs((ref_id,))  # the copy made for version-1 peers (`inline_screen`), if any
            self._sync()

        try:
            scheduler.call(forget)
        except RuntimeError:  # the loop is closed (the server is gone): nothing holds it any more
            pass

    def close(self) -> None:
        """Release every ref (the server is being destroyed)."""
        for ref_id in list(self.live):
            self.release(ref_id)

    def _sync(self) -> None:
        """On the I/O thread: send each node what changed (the local workers, every connected link)."""
        scheduler = self._scheduler
        scheduler.pool.sync_refs()
        for node in scheduler.nodes:
            node.refs = self.book  # a node added before the first put (a dask node uses it to refuse refs)
            sync = getattr(node, "sync_refs", None)
            if sync is not None:
                sync()

    def problem(self, ref: Ref) -> str:
        """Why `ref` cannot be used with this server: another server's, or released."""
        if ref._table is not self:
            return _foreign(ref)
        return (
            f"ref {ref.id:#x} was released (release() or its server's destroy()): put() the object again "
            "for new jobs"
        )


_first_put = threading.Lock()


def table_of(server: Any) -> RefTable:
    """`server`'s RefTable (its `_refs`), made by its first `put`, once even when threads put at once."""
    table: RefTable | None = server._refs
    if table is None:
        with _first_put:
            if server._refs is None:
                server._refs = RefTable(server._scheduler)
            table = server._refs
    assert table is not None
    return table


def forget_pickled() -> None:
    """Forget the refs this thread pickled that no job took: a pickling that failed half-way, a ref the caller
    pickled or copied itself. `submit` calls it before pickling a job's arguments whenever `PICKLED` is not
    empty, so that `checked_refs` takes only that job's own refs."""
    refs = _local.refs
    if refs:
        _local.refs = []
        del PICKLED[: len(refs)]


def checked_refs(table: RefTable | None, job: object) -> list[Ref]:
    """The refs this thread pickled since it last asked (`job`'s arguments, just pickled: `make_job`),
    checked against `table` (None: the server never made one): `RefError` for a ref released or of another
    server; else recorded as `job`'s (`RefTable.use`). It runs once per job that uses refs."""
    refs = _local.refs
    _local.refs = []
    del PICKLED[: len(refs)]  # as many entries as this thread added (which ones does not matter)
    if len(refs) > 1:
        refs = list({id(ref): ref for ref in refs}.values())
    if table is None:
        if refs:
            raise RefError(_foreign(refs[0]))
        return refs
    if not refs:
        return refs
    live = table.live
    with table.lock:  # a release from another thread comes before the check, or finds the job noted
        for ref in refs:
            if ref._table is not table or ref.id not in live:
                raise RefError(table.problem(ref))
        table.use(job)
    return refs


def _pickled(obj: object, protocol: int) -> bytes | Pickled:
    """`obj` pickled once: with its large buffers (a numpy array) out of band where it has some and needs no
    dill (its buffers then go to the local workers in a shared segment, and to nodes uncopied), else as
    `submit` pickles arguments (dill for what the caller's `__main__` defines)."""
    try:
        data = dumps(obj, protocol)
    except Exception:  # noqa: BLE001 - pickle_args_by tries dill, and raises clearly
        data = b""
    if isinstance(data, Pickled) and bytes(data.data).find(b"__main__") < 0:
        return data
    return pickle_args_by(obj, protocol)[0]


def _foreign(ref: Ref) -> str:
    return (
        f"ref {ref.id:#x} belongs to another Server: put() the object with the server that runs the job "
        "(each Server ships and frees its own refs)"
    )


def without_refs(
    batch: list[Any], node: str, fail: Callable[[list[tuple[Any, Result]], str], None]
) -> list[Any]:
    """The jobs of `batch` that use no ref; the others fail at once through `fail` (a node's results
    callback) with `RefUnavailableError`: `node` cannot hold refs (a dask cluster)."""
    using = [task for task in batch if task.refs]
    if not using:
        return batch
    message = (
        f"{node} cannot hold put() refs (a dask cluster runs jobs without ppft's workers): the job uses ref "
        f"{{}}; send jobs that use refs to local workers, ppservers or ssh:// nodes"
    )
    fail(
        [
            (task, Result(task.wire[0], False, error_type=_UNAVAILABLE, error_message=message.format(
                ", ".join(f"{ref.id:#x}" for ref in task.refs))))
            for task in using
        ],
        node,
    )  # fmt: skip
    return [task for task in batch if not task.refs]


def inline_screen(
    screen: Callable[[list[Any]], list[Any]] | None, book_of: Callable[[], RefBook | None]
) -> Callable[[list[Any]], list[Any]]:
    """The screen of a link to a version-1 peer (a ppserver of ppft 2.0.0), which cannot hold refs: the
    jobs that use refs get the objects inline in their arguments instead (unpickled here once per ref, and
    each such job's arguments pickled again: the object travels with every job, as before `put`)."""

    def inline(batch: list[Any]) -> list[Any]:
        if screen is not None:
            batch = screen(batch)
        book = book_of()
        if book is not None:
            for task in batch:
                if task.refs:
                    _inline(task, book)
        return batch

    return inline


def _inline(task: Any, book: RefBook) -> None:
    for ref in task.refs:
        data = book.refs.get(ref.id)
        if data is not None and not holds_ref(ref.id):
            hold_ref(ref.id, data)
    wire = task.wire
    args: tuple[Any, ...] = unpickle(wire.args)  # type: ignore[assignment]
    task.wire = wire._replace(args=pickle_args(args, wire.pickle_protocol))
    task.refs = ()
