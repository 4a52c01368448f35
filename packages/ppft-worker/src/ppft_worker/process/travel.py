"""The job runner as it travels to a host where ppft is not installed: a dask worker (`nodes.dask`).

The runner is three modules of this room, `picklers`, `namespaces` and `dask_runner` (the last imports the
other two with relative imports), the same files our own workers run (`execute.JobRunner` uses the first
two). They travel as text, not as pickled code, so that a host on another patch release of Python compiles
them itself; `travelling_runner()` gives:

* `key`: the name of the package the runner gets on the host, `__ppft_dask_runner_<digest of the texts>__`:
  a host keeps one copy per version of the runner, and never confuses it with a ppft installed there;
* `blob`: the three texts, in that order, pickled and compressed, sent with every task (the scheduler keeps
  it once per task graph);
* `boot`: a small function of no importable module (so pickled by value by cloudpickle, which dask uses),
  which installs the package once per process (under a lock: dask runs tasks in threads), then calls
  `run_batch` with the task's payload.

This module runs only where ppft is installed (the client); what runs on the host is `_BOOT_SOURCE` and the
three modules.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import importlib.resources
import pickle
import zlib
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = ["RUNNER_MODULES", "TravellingRunner", "travelling_runner"]

RUNNER_MODULES = ("picklers", "namespaces", "dask_runner")
"""The modules of the travelling runner, in the order the host executes them: each one's imports first."""

_BOOT_SOURCE = '''
def ppft_dask_task(runner_key, runner_blob, payload):
    """Run one batch of ppft jobs on a host without ppft, installing ppft's runner once per process."""
    import sys
    package = sys.modules.get(runner_key)
    runner = getattr(package, "runner", None)
    if runner is None:
        import threading, types
        fresh = types.ModuleType(runner_key, "ppft's job runner, for hosts where ppft is not installed")
        fresh.__path__ = []
        fresh.lock = threading.Lock()
        fresh.runner = None
        package = sys.modules.setdefault(runner_key, fresh)
        with package.lock:
            if package.runner is None:
                import pickle, zlib
                for name, source in pickle.loads(zlib.decompress(runner_blob)):
                    module = types.ModuleType(f"{runner_key}.{name}")
                    module.__package__ = runner_key
                    sys.modules[module.__name__] = module  # before it runs: the next ones import it
                    exec(compile(source, f"<ppft {name}>", "exec"), module.__dict__)
                    setattr(package, name, module)
                package.runner = module
        runner = package.runner
    import pickle
    return runner.run_batch(*pickle.loads(payload))
'''


class TravellingRunner(NamedTuple):
    key: str  # the package name the runner gets on a host: carries the digest of its texts
    blob: bytes  # its modules' texts, pickled and compressed
    boot: Callable[..., Any]  # the bootstrap, a function of no importable module (so pickled by value)


@functools.cache
def travelling_runner() -> TravellingRunner:
    """The runner's texts and the bootstrap, made once per process."""
    here = importlib.resources.files(__package__)
    texts = tuple((name, here.joinpath(f"{name}.py").read_text("utf-8")) for name in RUNNER_MODULES)
    digest = hashlib.sha256(repr(texts).encode("utf-8")).hexdigest()[:16]
    # a namespace that no module owns: cloudpickle then sends the function's code, not a reference
    namespace: dict[str, Any] = {"__name__": "__ppft_dask_boot__", "__builtins__": builtins}
    exec(compile(_BOOT_SOURCE, "<ppft dask bootstrap>", "exec"), namespace)
    blob = zlib.compress(pickle.dumps(texts, 4), 9)
    return TravellingRunner(f"__ppft_dask_runner_{digest}__", blob, namespace["ppft_dask_task"])
