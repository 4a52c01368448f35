"""`RefBook`: the `put()` refs a client, a ppserver or a dial-in worker holds, and what each peer was sent.

Every node that runs jobs for us (a local worker's pipe, a ppserver's link, a dial-in worker's link) is
sent each ref once, before the first batch of jobs after the ref was put: the node's `RefSync` remembers
which refs it holds and the book's `generation` it saw, so a batch costs one integer comparison unless a ref
came or went since; a new connection (a restarted ppserver, a replaced worker) starts with a fresh `RefSync`
and so gets every ref again. Refs released go out as one `Release`; a ref this side refused (`PutRefused`)
is passed on as refused, so that the jobs needing it fail with the reason.

Local workers get a ref whose pickle has large out-of-band buffers (a numpy array) as a mapped pickle
(`ppft_worker.mapped`): its buffers in one shared segment this process holds until the ref is released, which
each worker maps copy-on-write instead of holding a copy (`shared=True`; where no segment can be had, the
pickle goes through the pipe). Links get the buffered pickle itself, its buffers sent uncopied.

A ppserver bounds what it holds (`limit` bytes, and the memory the machine has left: `memory_refusal`) and
refuses a `Put` beyond it rather than being killed for lack of memory. Version-1 peers are never sent any of
this (they cannot hold refs: jobs using one fail there with `RefUnavailableError`). The book belongs to its
loop's thread; it does no I/O of its own (it queues messages on connections).
"""

from __future__ import annotations

from ppft_protocol import Blob, Connection, Pickled, Put, PutRefused, Release, is_pickled, split_pickled

from ..mapped import kept_field, mapped_args, unkeep

__all__ = ["RefBook", "RefSync", "memory_refusal"]

_MEMINFO = "/proc/meminfo"
_HEADROOM = 64 * 1024 * 1024  # bytes left to everything else once a ref and its copies are in memory


class RefSync:
    """What one connection's peer was sent: the book's generation, the ref ids it holds or was told about."""

    __slots__ = ("generation", "held")

    def __init__(self) -> None:
        self.generation = -1
        self.held: set[int] = set()


class RefBook:
    """The refs held here: their pickles by ref id (and who put each, on a ppserver), the refused ones."""

    def __init__(self, limit: int | None = None, copies: int = 1, shared: bool = True) -> None:
        """`limit`: bytes of refs held at once (None: no limit); `copies`: how many copies of each ref this
        machine holds besides the book's (its local workers each unpickle one); `shared`: large refs go to the
        local workers through a shared segment."""
        self.generation = 0
        self.refs: dict[int, Blob | Pickled] = {}
        self.local: dict[int, bytes] = {}  # ref id -> its mapped pickle, for the local workers
        self.shared = shared
        self.owners: dict[int, object] = {}
        self.refused: dict[int, str] = {}  # ref id -> why it is not held (passed on to the workers)
        self.bytes = 0
        self.refused_total = 0
        self.limit = limit
        self.copies = copies

    def put(self, ref_id: int, data: Blob | Pickled, owner: object = None) -> str | None:
        """Hold `data` under `ref_id` (a view is copied: the frame's buffer may be reused); or refuse it and
        say why (over `limit`, short of memory, an id another owner holds)."""
        size = len(data)
        other = self.owners.get(ref_id, owner)
        held = self.refs.get(ref_id)
        reason: str | None
        if other is not owner:
            reason = f"ref id {ref_id:#x} is held for another client"
        else:
            reason = memory_refusal(
                size, self.copies, self.limit, self.bytes - (len(held) if held is not None else 0)
            )
        self.generation += 1
        if reason is not None:
            self.refused_total += 1
            if held is None:
                self.refused[ref_id] = reason
                self.owners[ref_id] = owner
            return reason
        if held is not None:
            self.bytes -= len(held)
            self._unshare(ref_id)
        data = bytes(data) if isinstance(data, memoryview) else data
        self.refs[ref_id] = data
        self.owners[ref_id] = owner
        self.refused.pop(ref_id, None)
        self.bytes += size
        if self.shared:
            self._share(ref_id, data)
        return None

    def _share(self, ref_id: int, data: Blob | Pickled) -> None:
        """The mapped pickle of a ref with large buffers, for the local workers (none: they get `data`)."""
        if data.__class__ is not Pickled:
            if not is_pickled(data):
                return
            stream, buffers = split_pickled(data)
            data = Pickled(stream, buffers)
        field = mapped_args(data)  # its buffers were snapshotted into a segment (a client's `put`)
        if field is None:
            field = kept_field(ref_id, data)  # a segment held under the ref id
        if field is not None:
            self.local[ref_id] = field

    def _unshare(self, ref_id: int) -> None:
        if self.local.pop(ref_id, None) is not None:
            unkeep(ref_id)

    def release(self, ref_ids: tuple[int, ...] | list[int], owner: object = None) -> None:
        """Forget these refs (those `owner` put; unknown ids are ignored)."""
        owners = self.owners
        for ref_id in ref_ids:
            if ref_id in owners and owners[ref_id] is owner:
                del owners[ref_id]
                data = self.refs.pop(ref_id, None)
                if data is not None:
                    self.bytes -= len(data)
                    self._unshare(ref_id)
                self.refused.pop(ref_id, None)
                self.generation += 1

    def release_owner(self, owner: object) -> None:
        """Forget every ref `owner` put (its connection closed)."""
        mine = [ref_id for ref_id, who in self.owners.items() if who is owner]
        if mine:
            self.release(mine, owner)

    def receive(self, event: Put | Release | PutRefused) -> PutRefused | None:
        """A message from upstream (a dial-in worker's ppserver, an ssh node's client): the `PutRefused`
        to answer with, if the ref cannot be held here. A `PutRefused` received goes on to the workers."""
        if isinstance(event, Put):
            reason = self.put(event.ref_id, event.data)
            return None if reason is None else PutRefused(event.ref_id, reason)
        if isinstance(event, Release):
            self.release(event.ref_ids)
        else:
            self.release((event.ref_id,))
            self.refused[event.ref_id] = event.reason
            self.owners[event.ref_id] = None
            self.generation += 1
        return None

    def clear(self) -> None:
        """Forget every ref."""
        for ref_id in list(self.local):
            self._unshare(ref_id)
        self.refs.clear()
        self.owners.clear()
        self.refused.clear()
        self.bytes = 0
        self.generation += 1

    def sync(self, conn: Connection, state: RefSync, local: bool = False) -> None:
        """Queue on `conn` what its peer lacks: a `Put` per ref it does not hold, a `PutRefused` per refused
        ref it was not told about, one `Release` for the refs it holds that are gone. Nothing for a
        version-1 peer. `local`: the peer is a local worker (it maps the refs held in shared segments)."""
        state.generation = self.generation
        if conn.version < 2:
            return
        held = state.held
        refs = self.refs
        refused = self.refused
        gone = [ref_id for ref_id in held if ref_id not in refs and ref_id not in refused]
        if gone:
            held.difference_update(gone)
            conn.send(Release(tuple(gone)))
        shared = self.local if local else {}
        for ref_id, data in refs.items():
            if ref_id not in held:
                held.add(ref_id)
                conn.send(Put(ref_id, shared.get(ref_id, data)))
        for ref_id, reason in refused.items():
            if ref_id not in held:
                held.add(ref_id)
                conn.send(PutRefused(ref_id, reason))


def memory_refusal(size: int, copies: int, limit: int | None, held: int) -> str | None:
    """Why a ref of `size` bytes cannot be held here (None: it can): past `limit` with the `held` bytes, or
    more than the memory the machine has available (with `copies` more copies of it, and some headroom)."""
    if limit is not None and held + size > limit:
        return (
            f"{size} byte(s) would take the refs held past the node's limit ({held} byte(s) held, limit "
            f"{limit}: ppserver --refs-memory)"
        )
    available = _available()
    need = size * (1 + copies) + _HEADROOM
    if available is not None and need > available:
        return (
            f"the node has {available} byte(s) of memory available and holding {size} byte(s) "
            f"({1 + copies} copies) needs {need}"
        )
    return None


def _available() -> int | None:
    """MemAvailable of /proc/meminfo in bytes (None where there is none)."""
    try:
        with open(_MEMINFO, "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
