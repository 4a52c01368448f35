"""Private names of CPython live in one module, ppft_protocol.cpython, and hold as it assumes on every
supported Python: its check() runs here, and on each Python 3.10-3.13 found on this machine."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ppft_protocol import cpython

ROOT = Path(__file__).resolve().parent.parent
SHIM = ROOT / "packages" / "ppft-protocol" / "src" / "ppft_protocol" / "cpython.py"
SOURCES = sorted(p for p in (ROOT / "packages").glob("*/src/**/*.py") if p != SHIM)
SUPPORTED = ("3.10", "3.11", "3.12", "3.13")

PRIVATE_ATTRIBUTES = {
    "_is_owned",
    "_release_save",
    "_acquire_restore",
    "_at_fork_reinit",
    "_invoke_callbacks",
    "_compare_digest",
    "_getframe",
    "_current_frames",
    "_base",
}
"""Private attributes of standard-library objects that are asked of the shim instead (Future's own state,
`_state`, `_condition` and the like, is `Job`'s to keep: see `cpython.FUTURE_ATTRIBUTES`)."""


def test_every_private_name_holds_on_this_python():
    assert cpython.check() == []


def other_pythons() -> list[tuple[str, str]]:
    found: dict[str, str] = {}
    roots = [Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"]
    for root in roots:
        for version_dir in sorted(root.glob("3.*")) if root.is_dir() else ():
            minor = ".".join(version_dir.name.split(".")[:2])
            exe = version_dir / "bin" / "python3"
            if minor in SUPPORTED and exe.exists():
                found.setdefault(minor, str(exe))
    for minor in SUPPORTED:
        exe = shutil.which(f"python{minor}")
        if exe:
            found.setdefault(minor, exe)
    return sorted(found.items())


@pytest.mark.parametrize(("minor", "python"), other_pythons() or [("none", "")])
def test_every_private_name_holds_on_each_supported_python_found(minor, python):
    if not python:
        pytest.skip("no other Python 3.10-3.13 on this machine")
    ran = subprocess.run(
        [python, "-I", str(SHIM)], capture_output=True, text=True, timeout=60, cwd="/", check=False
    )
    assert ran.returncode == 0, f"{minor}: {ran.stdout}{ran.stderr}"
    assert ran.stdout.startswith(f"Python {minor}.") and "all as assumed" in ran.stdout


def private_uses(path: Path) -> list[str]:
    """Imports of private standard-library modules and uses of the private attributes above in `path`."""
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    stdlib = sys.stdlib_module_names
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Attribute) and node.attr in PRIVATE_ATTRIBUTES:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: .{node.attr}")
            continue
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "__future__":
                continue
            private_module = parts[0].startswith("_")  # _pickle, _signal, _sha2, ... (C halves of the stdlib)
            private_sub = parts[0] in stdlib and any(part.startswith("_") for part in parts[1:])
            if private_module or private_sub:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: import {name}")
    return found


def test_no_private_name_of_the_standard_library_outside_the_one_module():
    uses = [use for path in SOURCES for use in private_uses(path)]
    assert uses == [], "ask ppft_protocol.cpython for these instead:\n" + "\n".join(uses)
