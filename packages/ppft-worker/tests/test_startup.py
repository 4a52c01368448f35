"""What a worker process loads on its way to its first result, and the lazy public names of `ppft_worker`.

A local worker starts while its pool waits for it (the start-up benchmark races ProcessPoolExecutor's fork),
so the modules it imports before its first job are kept to what it needs: these tests name the heavy ones
that must stay out."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import ppft_worker

TIMEOUT = 30.0

# Loaded by none of ppft_worker.process, the protocol and (before a job needs them) the job runner.
_HEAVY = ("typing", "re", "enum", "dataclasses", "inspect", "logging", "hashlib", "hmac", "ctypes")


def _loaded_by(code: str) -> set[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run(
        [sys.executable, "-S", "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    ).stdout
    return set(out.split())


def test_worker_process_module_loads_nothing_heavy() -> None:
    loaded = _loaded_by("import ppft_worker.process")
    assert loaded.isdisjoint(_HEAVY), sorted(loaded & set(_HEAVY))
    assert "cryptography" not in " ".join(loaded)


def test_importing_the_package_loads_none_of_its_modules() -> None:
    loaded = _loaded_by("import ppft_worker")
    assert {name for name in loaded if name.startswith("ppft_")} == {"ppft_worker", "ppft_worker.version"}


def test_every_public_name_of_the_package_resolves() -> None:
    for name in ppft_worker.__all__:
        assert getattr(ppft_worker, name) is not None
    from ppft_worker.pool import WorkerPool

    assert ppft_worker.WorkerPool is WorkerPool
    assert set(ppft_worker.__all__) <= set(dir(ppft_worker))


def test_unknown_name_of_the_package_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="nothing_here"):
        ppft_worker.nothing_here  # type: ignore[attr-defined]  # noqa: B018
