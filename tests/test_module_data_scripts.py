"""What travels to a worker, from every way code is run: scripts whose jobs read module data.

Each script runs as a file, with `python -c`, from stdin, through `exec(text, {})` and as an IPython cell,
against local workers and against a real ppserver (one per test module and worker process, ended by PID),
and must print exactly what it prints when its functions run in the caller (docs/api.md, "What travels to
a worker"). A ppserver that speaks only protocol version 1 (what ppft 2.0.0 speaks) must give the same.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import ppft
from clusterlib import SECRET
from scriptlib import ALL_HOWS, run_script

EXPECTED: dict[str, list[str]] = {
    "module_data.py": ["21", "21", "15", "(17, [12, 14], 'Point')", "True"],
    "fresh_values.py": [
        "1",
        "2",
        "3",
        "3 [3, 4]",
        "['round0:0:[0]', 'round1:1:[0, 1]', 'round2:2:[0, 1, 2]']",
        "template:7:[0, 1, 2]",
        "['map:1:[0, 1, 2]', 'map:2:[0, 1, 2]']",
        "submit:3:[0, 1, 2]",
    ],
    "lambdas_and_closures.py": ["10", "15", "('traced', 15)", "30", "40", "7 12"],
    "global_writes.py": ["[(1, [1]), (2, [2]), (3, [3])]", "0 []", "(11, [1])"],
    "shadowed_names.py": ["6", "10", "200", "9", "2000"],
    "unpicklable_global.py": [
        "NameError name 'LOCK' is not defined on this worker: the caller's global LOCK could not be sent: "
        "its value, a _thread.lock, cannot be pickled (TypeError: cannot pickle '_thread.lock' object). "
        "Create it inside the function, or pass what the job needs as an argument",
        "6",
        "10",
    ],
    "big_global.py": ["[79999800000, 79999800001, 79999800002]"],
    "uses_own_module.py": ["30.0", "45.0"],
    "methods_and_recursion.py": ["5.0", "2.5", "2.0", "7", "2"],
    "script_classes_in_data.py": ["5.5", "6.0", "([3, 7], True)", "([1, 2], (1.5, None, b'x'), {})"],
}
FILE_ONLY: dict[str, list[str]] = {
    # an Enum class travels as source only: dill cannot pickle one by value (so not from -c, stdin, exec)
    "enum_in_data.py": ["('BLUE', True)", "('RED', False)"],
}


def _check(script: str, how: str, env: dict[str, str]) -> str:
    ran = run_script(script, how=how, env=env).check()
    assert ran.stdout.splitlines() == {**EXPECTED, **FILE_ONLY}[script], ran.stderr
    return ran.stderr


@pytest.mark.parametrize("how", ALL_HOWS)
@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_jobs_read_module_data_as_the_caller_would(
    module_mode: dict[str, str], script: str, how: str
) -> None:
    stderr = _check(script, how, module_mode)
    if script == "unpicklable_global.py":  # said once per global, however many functions read it
        assert stderr.count("reads the global LOCK, which cannot be sent to a worker") == 1, stderr
    elif script == "big_global.py":
        assert stderr.count("reads the global BIG, 1.8 MiB pickled, which is sent with every job") == 1, (
            stderr
        )
    else:
        assert "ppft" not in stderr, stderr  # no warning: `index` in shadowed_names.py is never read


@pytest.mark.parametrize("script", sorted(FILE_ONLY))
def test_an_enum_of_a_script_file_travels_as_source(module_mode: dict[str, str], script: str) -> None:
    _check(script, "file", module_mode)


@pytest.mark.parametrize("how", ["file", "-c"])
@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_a_protocol_1_ppserver_gives_the_same(
    protocol_1_ppserver: dict[str, str], script: str, how: str
) -> None:
    _check(script, how, {"PPSERVER": protocol_1_ppserver["PPSERVER"]})


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    pytest.importorskip("distributed")
    from dasklib import DaskCluster

    cluster = DaskCluster(tmp_path_factory.mktemp("dask"))
    try:
        cluster.add_workers(2)
        yield {"PPSERVER": cluster.entry}
    finally:
        cluster.close()


@pytest.mark.parametrize("how", ["file", "-c"])
@pytest.mark.parametrize("script", ["module_data.py", "fresh_values.py", "global_writes.py"])
def test_a_dask_cluster_gives_the_same(dask_cluster: dict[str, str], script: str, how: str) -> None:
    _check(script, how, dask_cluster)


def test_the_protocol_1_ppserver_really_speaks_version_1(protocol_1_ppserver: dict[str, str]) -> None:
    server = ppft.Server(0, ppservers=(protocol_1_ppserver["PPSERVER"],), secret=SECRET)
    try:
        assert server.submit(abs, (-3,))() == 3
        nodes = server._scheduler.nodes
        assert [node._established.version for node in nodes] == [1]  # type: ignore[attr-defined]
    finally:
        server.destroy()
