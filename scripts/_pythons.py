"""Every supported Python on this machine, and a venv of each with this checkout's wheels installed.

Used by scripts/test-pythons (the CI's smoke run on each Python other than the venv's) and by the tests of
mixed-version clusters (tests/test_mixed_pythons.py). Nothing here needs more than the standard library and
`scripts/_release` (to build the wheels, with hatchling).

- `find_python("3.12")` looks, in order, at `$PPFT_PYTHON_3_12` (a path: the way to point at any
  interpreter), pyenv's versions (`$PYENV_ROOT` or ~/.pyenv), `python3.12` on the PATH, and
  /usr/bin, /usr/local/bin; an interpreter counts only when it runs and says it is that version. A machine
  without it gets None, and `describe_missing` says where it looked.
- `wheel_venv(python, version)` builds the five wheels once per checkout state (their hashes name the
  venv), then makes `.venv-pythons/<version>-<hash>/` with `python -m venv --without-pip` and installs the
  wheels into it with this venv's pip (`pip --python`), their dependencies (cryptography, dill) from the
  package index. A venv already made for the same wheels is reused; a lock file makes concurrent callers
  (pytest-xdist workers) wait for each other instead of building twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from _release import ROOT, build, packages, supported_pythons

__all__ = [
    "VENVS",
    "describe_missing",
    "find_python",
    "supported_pythons",
    "wheel_venv",
    "wheels",
]

VENVS = ROOT / ".venv-pythons"
"""Where the venvs (and the wheels they were made from) live; gitignored, safe to delete."""

_PIP_TIMEOUT = 600


def _candidates(version: str) -> list[Path]:
    env = os.environ.get(f"PPFT_PYTHON_{version.replace('.', '_')}")
    found = [Path(env)] if env else []
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    if pyenv.is_dir():
        matches = [p for p in pyenv.iterdir() if p.name == version or p.name.startswith(f"{version}.")]
        for match in sorted(matches, key=lambda p: _release_key(p.name), reverse=True):
            found.append(match / "bin" / "python")
    on_path = shutil.which(f"python{version}")
    if on_path:
        found.append(Path(on_path))
    found += [Path(f"/usr/bin/python{version}"), Path(f"/usr/local/bin/python{version}")]
    return found


def _release_key(name: str) -> tuple[int, ...]:
    parts = []
    for part in name.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def find_python(version: str) -> Path | None:
    """An interpreter of Python `version` ("3.12") that runs, or None."""
    for path in _candidates(version):
        if not path.is_file() or not os.access(path, os.X_OK):
            continue
        try:
            done = subprocess.run(
                [str(path), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0 and done.stdout.strip() == version:
            return path
    return None


def describe_missing(version: str) -> str:
    """Where `find_python` looked for `version`, for the line that says it is missing."""
    env = f"PPFT_PYTHON_{version.replace('.', '_')}"
    where = f"~/.pyenv/versions/{version}.*, python{version} on the PATH, /usr/bin, /usr/local/bin"
    return f"looked at ${env}, {where}"


def _locked(path: Path):  # type: ignore[no-untyped-def]
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


_built: Path | None = None


def wheels() -> Path:
    """This checkout's five wheels (and sdists), built once per process and state of the sources: the
    directory (named by their hash, so venvs made from the same wheels are reused)."""
    global _built
    if _built is not None and _built.is_dir():
        return _built
    VENVS.mkdir(parents=True, exist_ok=True)
    with _locked(VENVS / ".lock"):
        staging = VENVS / "dist-new"
        shutil.rmtree(staging, ignore_errors=True)
        build(staging)
        digest = hashlib.sha256()
        for wheel in sorted(staging.glob("*.whl")):
            digest.update(wheel.name.encode() + b"\0" + wheel.read_bytes())
        target = VENVS / f"dist-{digest.hexdigest()[:12]}"
        if target.is_dir():
            shutil.rmtree(staging)
        else:
            staging.rename(target)
        for old in VENVS.glob("dist-*"):  # wheels of an older state of the sources
            if old != target and not any(VENVS.glob(f"*-{old.name.removeprefix('dist-')}")):
                shutil.rmtree(old, ignore_errors=True)
        _built = target
        return target


def wheel_venv(python: Path, version: str, extra: tuple[str, ...] = ()) -> Path:
    """A venv of `python` with this checkout's wheels installed (ppft and so all five): its directory.

    `extra`: more requirements to install with them. Raises RuntimeError with pip's output when pip fails
    (no network to the package index, say)."""
    dist = wheels()
    name = f"{version}-{dist.name.removeprefix('dist-')}"
    if extra:
        name += "-" + hashlib.sha256("\0".join(extra).encode()).hexdigest()[:8]
    venv = VENVS / name
    with _locked(VENVS / f".lock-{version}"):
        if (venv / ".complete").exists():
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([str(python), "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
        files = [str(dist / f"{p.dist_name}-{p.version}-py3-none-any.whl") for p in packages()]
        command = [
            sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
            "--disable-pip-version-check", *files, *extra,
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=_PIP_TIMEOUT, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"installing the wheels for Python {version} failed:\n{done.stdout}{done.stderr}"
            )
        (venv / ".complete").write_text(str(python) + "\n")
        for old in VENVS.glob(f"{version}-*"):  # venvs of older wheels: no longer used
            if old != venv and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
    with _locked(VENVS / ".lock"):
        for old in VENVS.glob("dist-*"):  # wheels no venv was made from any more
            if old != dist and not any(VENVS.glob(f"*-{old.name.removeprefix('dist-')}")):
                shutil.rmtree(old, ignore_errors=True)
    return venv
