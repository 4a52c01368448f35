"""Which implementations this run can measure, and with which interpreter.

`ppe` (ProcessPoolExecutor) and the bare pipeline always run in our venv. `ppft2` is our own ppft, picked
up when `import ppft` works in our venv and its version starts with "2"; what it offers (`Server`,
`Executor`, the `ppft_server` entry point) is probed, never assumed. `ppft178` is the original ppft 1.7.8 in
a venv of its own, created on first use. This module must never install anything into our venv or the
system interpreter.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field

from ppft_protocol import PPFTError

__all__ = [
    "PPFT178_VENV",
    "REPO",
    "BenchSetupError",
    "Impl",
    "env_for",
    "probe_dask",
    "probe_ppft2",
    "probe_ppft178",
]

log = logging.getLogger("ppft.bench")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PPFT178_VENV = os.path.join(REPO, ".bench-venv-ppft178")
_PPFT178 = "1.7.8"
_PROBE_TIMEOUT = 60.0
_INSTALL_TIMEOUT = 600.0

_PPFT2_PROBE = """
import importlib.util, json
try:
    import ppft
except Exception as exc:
    print(json.dumps({"error": f"import ppft failed: {exc!r}"}))
else:
    has_server = importlib.util.find_spec("ppft_server") is not None
    spec = importlib.util.find_spec("ppft_server.__main__") if has_server else None
    print(json.dumps({
        "version": str(getattr(ppft, "__version__", "")),
        "file": str(getattr(ppft, "__file__", "")),
        "Server": hasattr(ppft, "Server"),
        "Executor": hasattr(ppft, "Executor"),
        "ppserver": spec is not None,
    }))
"""


class BenchSetupError(PPFTError):
    """The harness could not prepare an implementation (venv creation, install) or a server."""


@dataclass
class Impl:
    """One implementation under test: where it runs and what it can do (`reason` says why not)."""

    key: str
    python: str
    available: bool
    reason: str = ""
    version: str = ""
    features: dict[str, bool] = field(default_factory=dict)
    ppserver_cmd: list[str] = field(default_factory=list)


def env_for(python: str) -> dict[str, str]:
    """Our environment; for another venv's interpreter, without PYTHONPATH (it could import our packages)."""
    if python == sys.executable:
        return dict(os.environ)
    return {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}


def _run_probe(python: str, code: str) -> dict[str, object]:
    proc = subprocess.run(
        [python, "-c", code],
        capture_output=True,
        text=True,
        timeout=_PROBE_TIMEOUT,
        cwd=REPO,
        env=env_for(python),
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"error": f"probe exited {proc.returncode}: {proc.stderr.strip()[-300:]}"}
    probed: dict[str, object] = json.loads(lines[-1])
    return probed


def probe_ppft2() -> Impl:
    """Our ppft, if `import ppft` works in this venv and is version 2.x."""
    python = sys.executable
    probed = _run_probe(python, _PPFT2_PROBE)
    if "error" in probed:
        return Impl("ppft2", python, False, reason=f"not importable yet ({probed['error']})")
    version = str(probed["version"])
    if not version.startswith("2"):
        return Impl(
            "ppft2", python, False, reason=f"`import ppft` gives version {version!r} ({probed['file']})"
        )
    features = {name: bool(probed[name]) for name in ("Server", "Executor", "ppserver")}
    if not features["Server"]:
        return Impl("ppft2", python, False, reason=f"ppft {version} has no Server yet", version=version)
    return Impl(
        "ppft2",
        python,
        True,
        version=version,
        features=features,
        ppserver_cmd=[python, "-m", "ppft_server"],
    )


def probe_dask() -> Impl:
    """dask.distributed in our venv (the `ppft[dask]` extra), for the dask scenario."""
    try:
        version = importlib.metadata.version("distributed")
    except importlib.metadata.PackageNotFoundError:
        why = 'dask.distributed is not installed in our venv (pip install "ppft[dask]")'
        return Impl("dask", sys.executable, False, reason=why)
    return Impl("dask", sys.executable, True, version=version)


def _venv_python(venv: str) -> str:
    return os.path.join(venv, "bin", "python")


def _installed_version(python: str) -> str:
    if not os.path.exists(python):
        return ""
    probed = _run_probe(python, "import json, ppft; print(json.dumps({'version': ppft.__version__}))")
    return "" if "error" in probed else str(probed["version"])


def _create_ppft178_venv(venv: str) -> None:
    """`python -m venv` (from our venv, so the base interpreter is the one ours is built on) + pip install."""
    print(f"bench: creating {venv} with ppft=={_PPFT178} (one time)...", flush=True)
    if not os.path.exists(_venv_python(venv)):
        _setup_step([sys.executable, "-m", "venv", venv], venv)
    _setup_step([_venv_python(venv), "-m", "pip", "install", "-q", f"ppft=={_PPFT178}"], venv)


def _setup_step(cmd: list[str], venv: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_INSTALL_TIMEOUT, check=False)
    if proc.returncode != 0:
        raise BenchSetupError(
            f"`{' '.join(cmd)}` failed with exit code {proc.returncode}: {proc.stderr.strip()[-500:]}; "
            f"remove {venv} and run again, or run without ppft178"
        )


def probe_ppft178(create: bool) -> Impl:
    """ppft 1.7.8 from its own venv; created (when `create`) if missing or broken."""
    python = _venv_python(PPFT178_VENV)
    version = _installed_version(python)
    if version != _PPFT178 and create:
        try:
            _create_ppft178_venv(PPFT178_VENV)
        except (BenchSetupError, subprocess.TimeoutExpired, OSError) as exc:
            return Impl("ppft178", python, False, reason=str(exc))
        version = _installed_version(python)
    if version != _PPFT178:
        why = "not created (this mode does not create it)" if not create else f"found version {version!r}"
        return Impl("ppft178", python, False, reason=f"{PPFT178_VENV}: ppft {_PPFT178} {why}")
    ppserver = os.path.join(PPFT178_VENV, "bin", "ppserver")
    return Impl(
        "ppft178",
        python,
        True,
        version=version,
        features={"Server": True, "Executor": False, "ppserver": os.path.exists(ppserver)},
        ppserver_cmd=[python, ppserver],
    )
