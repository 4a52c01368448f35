"""Clusters that mix Python versions: a client on 3.10 with a ppserver on 3.13, and the reverse.

Real processes of each Python, each from a venv with this checkout's wheels (scripts/_pythons.py builds them
once and reuses them; pip fetches cryptography and dill for each Python). A machine without both Pythons
skips these tests, saying which one is missing (the CI's scripts/test-pythons says it too).

Functions shipped as source run anywhere; lambdas and closures pickled by value run on another Python from
their source, which travels with their bytecode, and the script's classes (dataclasses too) from their
class statement (`ppft_worker.portable`); module data, arguments, results and exceptions cross both ways;
a function that has no source (`eval`, `python -c` before 3.13) is never sent to another Python: its job
fails with `ForeignPythonError` naming both. A ppserver's dial-in worker may run another Python: it
takes the jobs whose functions travel as source, and the others run on the ppserver's own workers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from clusterlib import ACCEPT_WORKERS, SECRET, Cluster, free_port, listening, wait_until
from scriptlib import run_script

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from _pythons import describe_missing, find_python, wheel_venv

OLD, NEW = "3.10", "3.13"


@pytest.fixture(scope="module")
def pythons() -> dict[str, str]:
    """{version: the python of a venv of it with this checkout's wheels} for 3.10 and 3.13."""
    venvs = {}
    for version in (OLD, NEW):
        python = find_python(version)
        if python is None:
            pytest.skip(f"Python {version} is not on this machine ({describe_missing(version)})")
        venvs[version] = str(wheel_venv(python, version) / "bin" / "python")
    return venvs


EXPECTED = """\
client {client} node {node}
source [0, 1, 4, 9, 16]
lambda 101
closure 7
module data ([1, 2, 3], 25)
module data changed ([1, 2, 3, 4], 25)
argument of a script class 5
dataclasses in module data and arguments ['pen: 1.50', 'ink: 4.00']
a namedtuple there and back Pair(left=2, right=1)
exception MyError bad 5 RemoteTraceback
a lambda as result 6
a lambda as argument [-1, -2]
"""


@pytest.mark.parametrize(("client", "node"), [(OLD, NEW), (NEW, OLD)], ids=["client-3.10", "client-3.13"])
def test_a_script_runs_the_same_on_a_ppserver_of_another_python(
    pythons: dict[str, str], cluster: Cluster, client: str, node: str
) -> None:
    server = cluster.ppserver(2, python=pythons[node])
    ran = run_script("mixed_versions.py", env={"PPSERVER": server.address}, python=pythons[client]).check()
    assert ran.stdout == EXPECTED.format(client=client, node=node), ran.stderr


NO_SOURCE = """
import ppft as pp, os
server = pp.Server(0, ppservers=(os.environ["PPSERVER"],))
try:
    print(server.submit(eval("lambda x: x + 1"), (1,))())  # made by eval: no source anywhere
except Exception as exc:
    print(type(exc).__module__, type(exc).__name__)
    print(exc)
print(server.submit(pow, (2, 5))())
server.destroy()
"""


@pytest.mark.parametrize(("client", "node"), [(OLD, NEW), (NEW, OLD)], ids=["client-3.10", "client-3.13"])
def test_a_function_without_source_is_never_sent_to_another_python(
    pythons: dict[str, str], cluster: Cluster, tmp_path: Path, client: str, node: str
) -> None:
    server = cluster.ppserver(1, python=pythons[node])
    script = tmp_path / "no_source.py"
    script.write_text(NO_SOURCE)
    ran = run_script(script, env={"PPSERVER": server.address}, python=pythons[client]).check()
    lines = ran.stdout.splitlines()
    assert lines[0] == "ppft_worker.pythons ForeignPythonError", ran.stdout
    assert f"as bytecode of CPython {client}." in lines[1] and f"which CPython {node} cannot run" in lines[1]
    assert "define it in a file" in lines[1] and f"run the workers with CPython {client}" in lines[1]
    assert lines[2] == "32", ran.stdout  # the node still serves: only that job failed
    assert "cannot run on ppserver" in ran.stderr  # said once in the client's log too
    assert "Segmentation fault" not in cluster.read_log(server)


DIALIN_SCRIPT = """
import ppft as pp, os
server = pp.Server(0, ppservers=(os.environ["PPSERVER"],))
def square(x):
    return x * x
double = eval("lambda x: 2 * x")  # no source: runs only on workers of this Python
squares = [server.submit(square, (i,)) for i in range(40)]
doubles = [server.submit(double, (i,)) for i in range(40)]
print(sum(job() for job in squares), sum(job() for job in doubles))
server.destroy()
"""


def test_a_dialin_worker_of_another_python_takes_the_jobs_that_travel_as_source(
    pythons: dict[str, str], cluster: Cluster, tmp_path: Path
) -> None:
    server = cluster.ppserver(1, python=pythons[NEW], extra=(*ACCEPT_WORKERS, "-d"))
    cluster.dialin(server, 2, python=pythons[OLD])
    wait_until(lambda: "dialled in with 2 worker(s)" in cluster.read_log(server), 30, "the dial-in worker")
    script = tmp_path / "dialin.py"
    script.write_text(DIALIN_SCRIPT)
    ran = run_script(script, env={"PPSERVER": server.address}, python=pythons[NEW]).check()
    assert ran.stdout.split() == [str(sum(i * i for i in range(40))), str(sum(2 * i for i in range(40)))]
    log = cluster.read_log(server)
    assert (
        f"runs CPython {OLD}." in log and "those pickled without source run on workers of CPython 3.13" in log
    )
    assert "Segmentation fault" not in log and "lost" not in log.lower(), log


def test_a_ppserver_without_a_worker_of_its_python_fails_those_jobs_naming_both(
    pythons: dict[str, str], cluster: Cluster, tmp_path: Path
) -> None:
    server = cluster.ppserver(0, python=pythons[NEW], extra=(*ACCEPT_WORKERS, "-d"))
    cluster.dialin(server, 1, python=pythons[OLD])
    wait_until(lambda: "dialled in with 1 worker(s)" in cluster.read_log(server), 30, "the dial-in worker")
    script = tmp_path / "dialin_only.py"
    script.write_text(
        "import ppft as pp, os\n"
        "server = pp.Server(0, ppservers=(os.environ['PPSERVER'],))\n"
        "def square(x):\n    return x * x\n"
        "print(server.submit(square, (7,))())\n"
        "try:\n    server.submit(eval('lambda x: x'), (1,))()\n"
        "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
        "server.destroy()\n"
    )
    ran = run_script(script, env={"PPSERVER": server.address}, python=pythons[NEW]).check()
    first, second = ran.stdout.splitlines()
    assert first == "49"
    assert second.startswith("ForeignPythonError function __main__.<lambda> cannot run on dial-in worker")
    assert f"CPython {OLD}" in second and f"as bytecode of CPython {NEW}." in second


_PROTOCOL_1_PPSERVER = (
    "import runpy, sys\n"
    "import ppft_protocol.connection as connection\n"
    "connection.Connection.__init__.__kwdefaults__['versions'] = (1, 1)\n"
    "sys.argv[0] = 'ppserver'\n"
    "runpy.run_module('ppft_server', run_name='__main__', alter_sys=True)\n"
)


def test_a_protocol_1_ppserver_of_another_python_fails_cleanly_where_it_cannot_compile(
    pythons: dict[str, str], cluster: Cluster, tmp_path: Path
) -> None:
    """A ppserver that speaks version 1 does not say its Python: the client cannot screen. The pickles
    still choose by the loading Python: what has source runs, what has none fails naming both Pythons, and
    no worker crashes."""
    port = free_port()
    argv = [pythons[NEW], "-c", _PROTOCOL_1_PPSERVER, "-p", str(port), "-i", "127.0.0.1", "-w", "1"]
    proc = cluster._spawn([*argv, "-s", SECRET], "ppserver-v1")
    wait_until(lambda: listening(port) or proc.popen.poll() is not None, 30, f"ppserver on {port}")
    script = tmp_path / "no_source_v1.py"
    script.write_text(
        NO_SOURCE.replace(
            "print(server.submit(pow",
            "print(server.submit(lambda x: x * 2, (16,))())\nprint(server.submit(pow",
        )
    )
    ran = run_script(script, env={"PPSERVER": f"127.0.0.1:{port}"}, python=pythons[OLD]).check()
    lines = ran.stdout.splitlines()
    assert lines[0] == "ppft_worker.errors JobSetupError", ran.stdout
    assert f"by CPython {OLD}." in lines[1] and f"CPython {NEW}.0 cannot run" in lines[1], lines[1]
    assert lines[2:] == ["32", "32"], ran.stdout
    assert "Segmentation fault" not in cluster.read_log(proc) and "lost" not in cluster.read_log(proc)
