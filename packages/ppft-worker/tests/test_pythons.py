"""Pickles for any Python (`ppft_worker.portable`, `ppft_worker.pythons`), tested on one Python.

Another Python is played by a fresh interpreter whose `importlib.util.MAGIC_NUMBER` is changed before it
loads the pickle: the loading side then takes the source path exactly as CPython 3.13 does for a pickle of
3.10 (tests/test_mixed_pythons.py runs real pairs of Pythons). A ppft 2.0.0 peer of the same Python, which
has no `ppft_worker.pythons`, is played by one where importing that module fails.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ppft_protocol import FunctionBody
from ppft_worker.pythons import NO_SOURCE, THIS_PYTHON, Screen, python_line, runs_bytecode_of

MAKER = """
import pickle, sys
from dataclasses import dataclass
from ppft_worker.portable import portable_dumps

def outer(k):
    return lambda x: x * k + 1

@dataclass
class Item:
    name: str
    price: float

    def label(self):
        return f"{self.name}: {self.price}"

no_source = eval("lambda x: x - 1")
what = sys.argv[1]
value = {"closure": outer(3), "item": Item("pen", 1.5), "no-source": no_source}[what]
sys.stdout.buffer.write(portable_dumps(value, 5, byref=False, recurse=True))
"""

LOADER = """
import importlib.util, pickle, sys
if sys.argv[1] == "foreign":
    importlib.util.MAGIC_NUMBER = b"\\x00\\x00\\r\\n"  # another Python's bytecode
elif sys.argv[1] == "old-peer":
    sys.modules["ppft_worker.pythons"] = None  # a ppft 2.0.0 peer: no such module
import dill  # a worker loads what pickle refuses with dill, which needs dill importable
data = sys.stdin.buffer.read()
try:
    value = pickle.loads(data)
except Exception as exc:
    print(type(exc).__name__, exc)
    raise SystemExit(0)
if callable(value):
    print("called", value(2))
else:
    print("item", value.label(), type(value).__name__, type(value).__module__)
"""


def _made(what: str, tmp_path: Path) -> bytes:
    script = tmp_path / "maker.py"
    script.write_text(textwrap.dedent(MAKER))
    done = subprocess.run([sys.executable, str(script), what], capture_output=True, timeout=60, check=True)
    return done.stdout


def _loaded(data: bytes, how: str, tmp_path: Path) -> str:
    script = tmp_path / "loader.py"
    script.write_text(LOADER)
    done = subprocess.run(
        [sys.executable, str(script), how], input=data, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode().strip()


@pytest.mark.parametrize("how", ["same", "old-peer", "foreign"])
def test_a_closure_loads_on_the_same_python_an_old_peer_and_another_python(how: str, tmp_path: Path) -> None:
    data = _made("closure", tmp_path)
    assert NO_SOURCE not in data
    assert _loaded(data, how, tmp_path) == "called 7"


@pytest.mark.parametrize("how", ["same", "old-peer", "foreign"])
def test_a_dataclass_instance_loads_everywhere(how: str, tmp_path: Path) -> None:
    data = _made("item", tmp_path)
    assert _loaded(data, how, tmp_path) == "item pen: 1.5 Item __main__"


def test_code_without_source_loads_on_the_same_python(tmp_path: Path) -> None:
    data = _made("no-source", tmp_path)
    assert NO_SOURCE in data
    assert _loaded(data, "same", tmp_path) == "called 1"
    assert _loaded(data, "old-peer", tmp_path) == "called 1"


def test_code_without_source_is_a_clear_error_on_another_python(tmp_path: Path) -> None:
    out = _loaded(_made("no-source", tmp_path), "foreign", tmp_path)
    assert out.startswith("ForeignPythonError <lambda> (line 1 of <string>) was pickled by value by ")
    assert f"by {THIS_PYTHON}, whose bytecode {THIS_PYTHON} cannot run" in out  # the same version here
    assert "define it in a file" in out and f"run the workers with {python_line(THIS_PYTHON)}" in out


def test_pythons_run_each_others_bytecode_by_implementation_and_major_minor() -> None:
    assert python_line("CPython 3.13.0") == "CPython 3.13"
    assert runs_bytecode_of("CPython 3.13.1", "CPython 3.13.0")
    assert not runs_bytecode_of("CPython 3.10.13", "CPython 3.13.0")
    assert not runs_bytecode_of("PyPy 3.10.14", "CPython 3.10.13")
    assert runs_bytecode_of("", "CPython 3.13.0")  # a peer that does not say: as before
    assert THIS_PYTHON.startswith("CPython 3.")


class _Task:
    def __init__(self, body: FunctionBody, job_id: int) -> None:
        self.body = body
        self.job_id = job_id


def test_a_screen_refuses_bodies_without_source_once_per_body() -> None:
    portable = FunctionBody(b"p" * 32, "f", ("def f():\n    return 1\n",))
    native = FunctionBody(b"n" * 32, "<lambda>", (), (), b"...bytecode_without_source...")
    refused: list[tuple[list[int], str]] = []
    screen = Screen("ppserver n1:1 (CPython 3.13.0)", "CPython 3.13",
                    lambda tasks, why: refused.append(([t.job_id for t in tasks], why)),
                    producer="CPython 3.10.13")  # fmt: skip
    batch = [_Task(portable, 1), _Task(native, 2), _Task(native, 3), _Task(portable, 4)]
    kept = screen(batch)
    assert [t.job_id for t in kept] == [1, 4]
    assert len(refused) == 1 and refused[0][0] == [2, 3]
    why = refused[0][1]
    assert why.startswith(
        "function <lambda> cannot run on ppserver n1:1 (CPython 3.13.0): it travels pickled"
    )
    assert "as bytecode of CPython 3.10.13, which CPython 3.13 cannot run" in why
