"""ppft-worker: runs ppft jobs in worker processes, and the `WorkerPool` that keeps local ones.

`python -m ppft_worker` is one worker process (`ppft_worker.process`); `WorkerPool` starts and feeds local
ones from the thread that runs their `Loop`; `JobRunner` turns a job message into a result message.

Every public name is loaded on first use (module `__getattr__`), never on `import ppft_worker`: a worker
process imports this package first, while its pool waits for it, and needs none of the pool's modules.
This module must stay free of imports beyond `version`.
"""

from __future__ import annotations

from .version import __version__

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .errors import SecretFileError, WorkerLostError
    from .execute import JobRunner
    from .loop import Loop
    from .pool import WorkerPool
    from .process import serve
    from .secret import SECRET_ENV, default_secret_path, read_secret_file, resolve_secret

__all__ = [
    "SECRET_ENV",
    "JobRunner",
    "Loop",
    "SecretFileError",
    "WorkerLostError",
    "WorkerPool",
    "__version__",
    "default_secret_path",
    "read_secret_file",
    "resolve_secret",
    "serve",
]

_HOMES = {
    "serve": "process",
    "resolve_secret": "secret",
    "read_secret_file": "secret",
    "default_secret_path": "secret",
    "SECRET_ENV": "secret",
    "WorkerPool": "pool",
    "JobRunner": "execute",
    "WorkerLostError": "errors",
    "SecretFileError": "errors",
    "Loop": "loop",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'ppft_worker' has no attribute {name!r}")
    module = __import__(f"{__name__}.{home}", fromlist=[name])  # the submodule (importlib would cost more)
    value = getattr(module, name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
