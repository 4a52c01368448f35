"""User scripts run as users run them: a file, `python -c`, standard input; local workers or a real ppserver.

Imported by tests as `scriptlib` (the root pyproject puts tests/ on the path). The scripts themselves live in
tests/scripts/: each is a plain program a user could have written, which picks its job server from the
environment so that one file serves both modes:

    import os
    import ppft as pp

    PPSERVER = os.environ.get("PPSERVER")  # "host:port": every job on that ppserver; unset: local workers
    job_server = pp.Server(0, ppservers=(PPSERVER,)) if PPSERVER else pp.Server(2)

Besides the three ways of `HOWS`, `INTERACTIVE_HOWS` are the ways code without a file of its own is run:
"exec" (`exec(text, ns)` with a fresh dict `ns`, as a program that runs code it read) and "ipython" (the
whole script as one IPython cell, `ipython -c TEXT`: functions defined in a cell, whose source lives only in
IPython's line cache, as in a notebook). `ALL_HOWS` is all five.

`run_script` runs one in a fresh interpreter (its own session, so a timeout ends it and every process it
started, by process group), with `PPFT_SECRET` set to the test cluster's secret, and returns what it printed.
The `script_mode` fixture gives the environment of each mode: "local" (no ppserver) and "remote" (a real
ppserver started for the test and ended by PID at teardown).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from clusterlib import SECRET, Cluster, free_port, listening, tied_to_this_process, wait_until

SCRIPTS = Path(__file__).resolve().parent / "scripts"
HOWS = ("file", "-c", "stdin")
"""The ways `run_script` can run a script: `python script.py`, `python -c TEXT`, `python - < script.py`."""
INTERACTIVE_HOWS = ("exec", "ipython")
"""`exec(TEXT, {})` in a plain interpreter (the text on its stdin), and the text as one IPython cell."""
ALL_HOWS = HOWS + INTERACTIVE_HOWS
_EXEC_RUNNER = "import sys\nns = {}\nexec(sys.stdin.read(), ns)\n"


@dataclass
class Ran:
    """What a script did: its exit status and the text it wrote to each stream."""

    returncode: int
    stdout: str
    stderr: str

    def check(self) -> Ran:
        """This, if the script exited with 0; else the test fails showing both streams."""
        assert self.returncode == 0, (
            f"exit {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"
        )
        return self


def run_script(
    script: Path | str,
    *,
    how: str = "file",
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 90.0,
    python: str | None = None,
) -> Ran:
    """Run `script` (a path, or a name in tests/scripts/) `how` users do; never longer than `timeout`.
    `python`: the interpreter (another venv's, for mixed Python versions; default: this one)."""
    executable = python or sys.executable
    path = Path(script)
    if not path.is_absolute():
        path = SCRIPTS / path
    text = path.read_text(encoding="utf-8")
    argv: list[str]
    stdin_text: str | None = None
    if how == "file":
        argv = [executable, str(path)]
    elif how == "-c":
        argv = [executable, "-c", text]
    elif how == "stdin":
        argv = [executable, "-"]
        stdin_text = text
    elif how == "exec":
        argv = [executable, "-c", _EXEC_RUNNER]
        stdin_text = text
    elif how == "ipython":
        argv = [executable, "-m", "IPython", "--no-banner", "--quick", "--colors=NoColor"]
        argv += ["--HistoryManager.enabled=False", "-c", text]
    else:
        raise ValueError(f"how must be one of {ALL_HOWS}, not {how!r}")
    full_env = dict(os.environ, PPFT_SECRET=SECRET, PYTHONUNBUFFERED="1")
    ipython_dir = None
    if how == "ipython":  # IPython's profile in a folder of its own, never the user's ~/.ipython
        ipython_dir = tempfile.mkdtemp(prefix="ppft-ipython-")
        full_env["IPYTHONDIR"] = ipython_dir
    full_env.pop("PPSERVER", None)
    full_env.update(env or {})
    proc = subprocess.Popen(
        tied_to_this_process(argv),  # killed with the test process too (pytest-timeout ends it, no teardown)
        cwd=cwd or path.parent,
        env=full_env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(stdin_text, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        out, err = proc.communicate(timeout=10)
        pytest.fail(f"{path.name} ({how}) ran over {timeout} s\n--- stdout\n{out}\n--- stderr\n{err}")
    finally:
        _kill_group(proc.pid)  # whatever the script left behind (it should have left nothing)
        if ipython_dir is not None:
            shutil.rmtree(ipython_dir, ignore_errors=True)
    return Ran(proc.returncode, out, err)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@pytest.fixture(params=["local", "remote"])
def script_mode(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment for a script in each mode: {} for local workers, {"PPSERVER": address} for a real
    ppserver with 2 workers, started for this test and ended by PID at teardown."""
    if request.param == "local":
        yield {}
        return
    cluster = Cluster(tmp_path)
    try:
        server = cluster.ppserver(workers=2)
        yield {"PPSERVER": server.address}
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def module_ppserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real ppserver with 2 workers for the whole test module (`clusterlib`'s handle on it: `address`,
    `pid`), ended by PID at teardown."""
    cluster = Cluster(tmp_path_factory.mktemp("ppserver"))
    try:
        yield cluster.ppserver(workers=2)
    finally:
        cluster.close()


@pytest.fixture(scope="module", params=["local", "remote"])
def module_mode(request: pytest.FixtureRequest) -> dict[str, str]:
    """As `script_mode`, with one ppserver (2 workers) for the whole test module (`module_ppserver`)."""
    if request.param == "local":
        return {}
    return {"PPSERVER": request.getfixturevalue("module_ppserver").address}


PROTOCOL_1 = (
    "import ppft_protocol.connection as connection\n"
    "connection.Connection.__init__.__kwdefaults__['versions'] = (1, 1)  # what ppft 2.0.0 speaks\n"
)
"""Lines that make every connection of the process speak protocol version 1 only, as ppft 2.0.0 does."""

PROTOCOL_1_PPSERVER = (
    PROTOCOL_1 + "import runpy, sys\nsys.argv[0] = 'ppserver'\n"
    "runpy.run_module('ppft_server', run_name='__main__', alter_sys=True)\n"
)
"""`python -c` text of a ppserver that speaks protocol version 1 only (ppft 2.0.0 on the wire); its
command-line arguments follow."""


@pytest.fixture(scope="module")
def protocol_1_ppserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """{"PPSERVER": address} of a ppserver (2 workers) that is on the wire as ppft 2.0.0 is: it speaks
    protocol version 1 only. One per test module, ended by PID at teardown."""
    cluster = Cluster(tmp_path_factory.mktemp("ppserver-v1"))
    try:
        port = free_port()
        argv = [sys.executable, "-c", PROTOCOL_1_PPSERVER, "-p", str(port), "-i", "127.0.0.1", "-w", "2"]
        proc = cluster._spawn([*argv, "-s", SECRET, "-d"], "ppserver-v1")
        wait_until(lambda: listening(port) or proc.popen.poll() is not None, 30, f"ppserver on {port}")
        assert proc.popen.poll() is None, cluster.read_log(proc)
        yield {"PPSERVER": f"127.0.0.1:{port}"}
    finally:
        cluster.close()
