"""The job runner that travels to hosts without ppft (`ppft_worker.process.travel`): one piece of code with
the worker's own `JobRunner`, installed once per process, and runnable where nothing of ppft imports."""

from __future__ import annotations

import ast
import json
import os
import pickle
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from ppft_protocol import function_digest
from ppft_worker.process import RUNNER_MODULES, execute, namespaces, picklers, travelling_runner
from ppft_worker.process import dask_runner as runner_module

TIMEOUT = 60.0
PROCESS = Path(runner_module.__file__).parent


def body(name: str, *sources: str, imports: tuple[str, ...] = (), pickled: bytes = b"") -> tuple:
    return (function_digest(name, sources, imports, pickled), name, sources, imports, pickled)


def test_the_runners_share_one_namespace_builder_and_one_pickler():
    assert runner_module.make_namespace is namespaces.make_namespace is execute.make_namespace
    assert runner_module.pickle_exception is picklers.pickle_exception
    assert runner_module.job_traceback is namespaces.job_traceback is execute.job_traceback


def test_the_blob_carries_the_files_our_workers_run():
    texts = pickle.loads(zlib.decompress(travelling_runner().blob))
    assert [name for name, _ in texts] == list(RUNNER_MODULES) == ["picklers", "namespaces", "dask_runner"]
    for name, text in texts:
        assert text == (PROCESS / f"{name}.py").read_text("utf-8")
    assert travelling_runner().key.startswith("__ppft_dask_runner_")


def _imports(tree: ast.Module) -> list[tuple[str, int, bool]]:
    """(module, level, guarded) of every import; guarded: under `elif __name__.startswith("ppft_worker.")`."""
    found = []
    guarded_nodes = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "ppft_worker." in ast.unparse(node.test)
        for n in ast.walk(ast.Module(body=node.body, type_ignores=[]))
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, 0, id(node) in guarded_nodes) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", node.level, id(node) in guarded_nodes))
    return found


@pytest.mark.parametrize("name", RUNNER_MODULES)
def test_a_travelling_module_imports_nothing_of_ppft_but_where_ppft_is_installed(name):
    tree = ast.parse((PROCESS / f"{name}.py").read_text("utf-8"))
    for module, level, guarded in _imports(tree):
        if module.split(".")[0] in ("ppft_protocol", "ppft_worker", "ppft_client", "ppft"):
            assert guarded and module == "ppft_protocol.cpython", (name, module)
        if level:
            assert module in RUNNER_MODULES, (name, module)  # a sibling that travels with it


def test_the_bootstrap_pickles_by_value_without_ppft():
    cloudpickle = pytest.importorskip("cloudpickle")
    data = cloudpickle.dumps(travelling_runner().boot)
    assert b"ppft_client" not in data and b"ppft_worker" not in data


def test_the_bootstrap_installs_the_runner_once_and_runs_a_batch(monkeypatch):
    runner = travelling_runner()
    for module in [m for m in sys.modules if m.startswith(runner.key)]:
        monkeypatch.delitem(sys.modules, module)
    square = body("square", "def square(x):\n    return x * x\n")
    payload = pickle.dumps(((square,), ((1, square[0], pickle.dumps((7,)), 5),)), 5)
    assert runner.boot(runner.key, runner.blob, payload)[0][:3] == (1, True, pickle.dumps(49, 5))
    installed = sys.modules[runner.key].runner
    assert installed.__name__ == f"{runner.key}.dask_runner"
    assert installed.make_namespace is sys.modules[f"{runner.key}.namespaces"].make_namespace
    runner.boot(runner.key, runner.blob, payload)
    assert sys.modules[runner.key].runner is installed


BLOCKED_HOST = """
import json, pickle, sys

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"ppft", "pp", "ppft_protocol", "ppft_worker", "ppft_client", "ppft_server"}:
            raise ImportError(f"{name} is blocked: this host has no ppft")

sys.meta_path.insert(0, Blocker())
key, blob, boot_source, payload = pickle.load(sys.stdin.buffer)
namespace = {"__name__": "boot"}
exec(boot_source, namespace)
results = namespace["ppft_dask_task"](key, blob, payload)
print(json.dumps([[r[0], r[1], r[6], r[7], r[3]] for r in results]))
print(json.dumps(sorted(m for m in sys.modules if m.startswith(("ppft", "pp.")))))
"""


def test_the_runner_runs_where_nothing_of_ppft_can_be_imported():
    from ppft_worker.process.travel import _BOOT_SOURCE

    runner = travelling_runner()
    ok = body("f", "def f(x):\n    print('hello', x)\n    return {'x': x}\n")
    raises = body("g", "def g(x):\n    raise KeyError(x)\n")
    missing = body("h", "def h():\n    return 1\n", imports=("no_such_module_for_ppft",))
    jobs = (
        (1, ok[0], pickle.dumps((3,)), 5),
        (2, raises[0], pickle.dumps(("k",)), 5),
        (3, missing[0], pickle.dumps(()), 5),
    )
    payload = pickle.dumps(((ok, raises, missing), jobs), 5)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    done = subprocess.run(
        [sys.executable, "-c", BLOCKED_HOST],
        input=pickle.dumps((runner.key, runner.blob, _BOOT_SOURCE, payload)),
        capture_output=True,
        env=env,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    results, loaded = (json.loads(line) for line in done.stdout.decode().splitlines())
    assert results[:2] == [[1, True, "", "", "hello 3\n"], [2, False, "builtins.KeyError", "'k'", ""]]
    assert results[2][:3] == [3, False, "ppft_worker.errors.JobSetupError"]
    assert "no_such_module_for_ppft" in results[2][3] and "not installed on this worker" in results[2][3]
    assert loaded == []
