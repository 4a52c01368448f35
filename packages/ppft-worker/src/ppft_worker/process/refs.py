"""The objects a worker holds for `put()` refs, and `resolve`, which a job's arguments call to get one.

A client's `Ref` pickles as `resolve(ref_id)`, so a job's arguments load with the plain `pickle.loads` and
each ref costs one dict lookup in this process; `resolve` is registered as a pickle extension
(`copyreg.add_extension`, code `EXTENSION`), so a ref pickles in 3 bytes plus its id and loads without an
import look-up (where another library took the code, refs pickle by name instead). Importing this module
registers it: the worker's `execute` imports it, so that a job's arguments always load.

The pool sends each ref's pickle once (`Put`, protocol version 2), before the first job that may use it;
`hold` unpickles it then, once per worker, so every job on this worker gets the same object (a job that
changes it changes what later jobs on this worker see: objects given to `put()` are meant to be read).
`PutRefused` from the pool records why a ref will not come, so the jobs that need it fail naming it
(`RefUnavailableError`); `Release` forgets refs once no queued job needs them (the loop calls `forget` when
its queue is empty). A direct worker gets its refs from its ppserver on a channel of their own, read only
when a job needs a ref not held here (`await_refs` names what to call then: `refchannel.RefChannel.wait_for`).

This module does no I/O and never raises out of `hold`: an object that does not unpickle here is kept as the
reason its jobs fail.
"""

from __future__ import annotations

import copyreg
from collections.abc import Callable, Iterable

from ppft_protocol import Pickled

from ..errors import RefUnavailableError

__all__ = [
    "EXTENSION",
    "await_refs",
    "drop_refs",
    "forget",
    "held",
    "hold",
    "hold_ref",
    "holds_ref",
    "refuse",
    "release",
    "resolve",
    "resolve_ref",
]

EXTENSION = 0x7019
"""The pickle extension code of `resolve` (both ends register it on importing this module)."""

_objects: dict[int, object] = {}
_problems: dict[int, str] = {}  # ref id -> why this worker does not hold it (refused, not unpickling)
_doomed: set[int] = set()  # released, forgotten once the queue is empty
_fetch: Callable[[int], None] | None = None  # a direct worker: waits for a ref its ppserver is passing on


def await_refs(fetch: Callable[[int], None] | None) -> None:
    """`fetch(ref_id)` is called when a job needs a ref not held (nor known refused) here: it returns once
    the ref may have come, or raises `RefUnavailableError` (a direct worker's ref channel)."""
    global _fetch
    _fetch = fetch


def resolve(ref_id: int) -> object:
    """The object held under `ref_id` (what a `Ref` in a job's arguments unpickles as)."""
    try:
        return _objects[ref_id]
    except KeyError:
        pass
    if _fetch is not None and ref_id not in _problems:
        _fetch(ref_id)
        try:
            return _objects[ref_id]
        except KeyError:
            pass
    problem = _problems.get(ref_id)
    if problem is None:
        problem = (
            "it was released, or the node cannot hold refs (a dask cluster, a ppft 1 or 2.0 peer): "
            "send jobs that use refs to nodes of this ppft version, and put() objects with the Server "
            "that submits their jobs"
        )
    raise RefUnavailableError(f"ref {ref_id:#x} is not held by this worker: {problem}")


def hold(ref_id: int, data: bytes | memoryview | Pickled) -> None:
    """Keep the object pickled in `data` under `ref_id` (unpickled now: `data` may be a view of a buffer
    that the next frame reuses)."""
    import pickle  # noqa: PLC0415 - only workers that are sent refs pay for the module

    _doomed.discard(ref_id)
    _problems.pop(ref_id, None)
    try:
        if isinstance(data, Pickled) or data[:4] in (b"\xffPB5", b"\xffPBM"):  # buffered, or mapped (`oob`)
            from .. import oob  # noqa: PLC0415

            _objects[ref_id] = oob.loads(data)
        else:
            _objects[ref_id] = pickle.loads(data)
        return
    except Exception as exc:  # noqa: BLE001 - dill's loader may still read it; else its jobs say why
        first = exc
    try:
        import dill  # noqa: PLC0415 - objects pickled by value (a class of the caller's __main__)

        _objects[ref_id] = dill.loads(data if isinstance(data, bytes) else bytes(data))  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - reported by the jobs that need it
        _objects.pop(ref_id, None)
        _problems[ref_id] = (
            f"its object cannot be unpickled here ({type(first).__name__}: {first}; dill: "
            f"{type(exc).__name__}: {exc}): every class it uses must be importable on the node"
        )


def refuse(ref_id: int, reason: str) -> None:
    """The node will not send `ref_id`: its jobs fail with `reason`."""
    _objects.pop(ref_id, None)
    _problems[ref_id] = f"the node refused it: {reason}"


def release(ref_ids: tuple[int, ...]) -> None:
    """Forget these refs once no queued job needs them (`forget`)."""
    _doomed.update(ref_ids)


def forget() -> None:
    """Drop the released refs (the worker loop calls it when its queue is empty)."""
    drop_refs(_doomed)
    _doomed.clear()


def holds_ref(ref_id: int) -> bool:
    """Whether this process holds `ref_id` (a client that inlines refs for a version-1 peer)."""
    return ref_id in _objects


def drop_refs(ref_ids: Iterable[int]) -> None:
    """Forget these refs now (a client's own copies, on release)."""
    for ref_id in ref_ids:
        _objects.pop(ref_id, None)
        _problems.pop(ref_id, None)


def held() -> int:
    """How many refs this worker holds."""
    return len(_objects)


resolve_ref = resolve  # its name outside this room (`ppft_worker.process.resolve_ref`); pickles as `resolve`
hold_ref = hold


try:
    copyreg.add_extension(__name__, "resolve", EXTENSION)
except ValueError:  # the code (or the name) is registered to something else here: refs pickle by name
    pass
