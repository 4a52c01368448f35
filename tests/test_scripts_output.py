"""Job output, from user scripts run as files, with -c and from stdin, local and on a real ppserver.

A job's stdout reaches the caller's stdout and its stderr the caller's stderr, each job's text together, when
its value is asked (ppft 1.7's moment); the text of a job that takes its worker down with it is kept and
shown before its `WorkerLostError`; output nobody asked for shows by the end, once; `live_output=True` shows
lines while the job runs. A ppserver that speaks only protocol version 1 (ppft 2.0.0), and a client that does,
get version 1's behaviour: stdout and stderr as one text, on stdout.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clusterlib import SECRET, Cluster, wait_until
from scriptlib import HOWS, PROTOCOL_1, SCRIPTS, run_script

_PROTOCOL_1_CLIENT = PROTOCOL_1 + "import runpy, sys\nrunpy.run_path(sys.argv[1], run_name='__main__')\n"


# -- stdout to stdout, stderr to stderr, when the value is asked ------------------------------------------

STREAMS_STDOUT = (
    "before the jobs\njobs submitted\n"
    "a out 1\na out 2\na out 3\na donevalue A\n"
    "b out 1\nb out 2\nb out 3\nb donevalue B\n"
    "again A\n"
)


@pytest.mark.parametrize("how", HOWS)
def test_each_stream_of_a_job_reaches_the_callers_own_when_its_value_is_asked(
    module_mode: dict[str, str], how: str
) -> None:
    ran = run_script("output_streams.py", how=how, env=module_mode).check()
    assert ran.stdout == STREAMS_STDOUT
    assert ran.stderr == "a err 2\nb err 2\n"


def test_a_protocol_1_ppserver_gives_stderr_with_stdout_as_version_1_does(
    protocol_1_ppserver: dict[str, str],
) -> None:
    ran = run_script("output_streams.py", env=protocol_1_ppserver).check()
    assert ran.stdout == STREAMS_STDOUT.replace("a out 2\n", "a out 2\na err 2\n").replace(
        "b out 2\n", "b out 2\nb err 2\n"
    )
    assert ran.stderr == ""


def test_a_protocol_1_client_gives_stderr_with_stdout_as_version_1_does(module_mode: dict[str, str]) -> None:
    ran = _run_with(
        [sys.executable, "-c", _PROTOCOL_1_CLIENT, str(SCRIPTS / "output_streams.py")], module_mode
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == STREAMS_STDOUT.replace("a out 2\n", "a out 2\na err 2\n").replace(
        "b out 2\n", "b out 2\nb err 2\n"
    )


def test_a_jobs_output_comes_before_its_classic_callback_runs(module_mode: dict[str, str]) -> None:
    ran = run_script("output_callback.py", env=module_mode).check()
    assert ran.stdout == "squaring 3\ncallback #3: 9\nsquaring 4\ncallback #4: 16\nend\n"
    assert ran.stderr == "3 is fine\n4 is fine\n"


def test_jobs_go_on_when_the_callers_stdout_is_closed(module_mode: dict[str, str]) -> None:
    ran = run_script("output_stuck_stdout.py", env={**module_mode, "STDOUT": "closed"}).check()
    values = "values [2000, 2000, 2000, 2000]"
    assert ran.stderr == f"live {values}\nplain {values}\n"


def test_jobs_go_on_when_nobody_reads_the_callers_stdout(module_mode: dict[str, str]) -> None:
    """The live lines fill the pipe and the printing thread blocks on it: the values still come (on stderr)
    before anyone reads stdout; then everything printed arrives. (Without live output the caller's own thread
    prints a job's text when it asks for the value, as ppft 1.7 and print() do: it waits for the reader.)"""
    seen: dict[str, Path] = {}
    ran = _run_with(
        [sys.executable, str(SCRIPTS / "output_stuck_stdout.py")], {**module_mode, "STDOUT": "stuck"},
        stderr_first="live values", when_seen=seen,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    values = "values [2000, 2000, 2000, 2000]"
    assert ran.stderr == f"live {values}\nplain {values}\n"
    lines = ran.stdout.splitlines()
    assert len(lines) == 2 * 4 * 2000
    assert sum(line.startswith("[job ") for line in lines) == 4 * 2000


# -- a job that takes its worker down -------------------------------------------------------------------

LAST_LINES = {
    "exit": "about to exit",
    "partial": "half a line",
    "segfault": "about to read address 0",
    "kill": "sleeping, to be killed",
}


@pytest.mark.parametrize("death", sorted(LAST_LINES))
def test_what_a_job_printed_before_its_worker_died_is_shown_with_its_error(
    module_mode: dict[str, str], death: str, tmp_path: Path
) -> None:
    env = {**module_mode, "DEATH": death, "PIDFILE": str(tmp_path / "pid")}
    ran = run_script("output_dying.py", env=env, timeout=150).check()
    last = LAST_LINES[death]
    end = "" if death == "partial" else "\n"
    error = next(line for line in ran.stdout.splitlines() if "WorkerLostError" in line)
    assert ran.stdout.startswith(f"working on item 7\n{last}{end}WorkerLostError: "), ran.stdout
    assert f"the last line {last!r}" in error
    assert ran.stdout.endswith("next job: 1024\n")
    assert "warning: item 7 looks odd\n" in ran.stderr
    assert ran.stderr.count("warning: item 7 looks odd") == 1  # the last attempt's text, once


# -- output nobody asked for ---------------------------------------------------------------------------


@pytest.mark.parametrize("ending", ["destroy", "exit", "with"])
def test_output_nobody_asked_for_shows_once_by_the_end(module_mode: dict[str, str], ending: str) -> None:
    ran = run_script("output_unasked.py", env={**module_mode, "ENDING": ending}).check()
    after = {"destroy": "after destroy\n", "exit": "", "with": "after the with block\n"}[ending]
    # jobs 2 and 3 run at once, on two workers: their text shows in the order they finished
    assert any(
        ran.stdout
        == (
            "job 1 says hello\nasked: 1\n"
            "raw: 4 'job 4 says hello\\njob 4 complains\\n'\n"  # sresult carries the output as ppft 1.7's did
            f"all done\njob {a} says hello\njob {b} says hello\n" + after
        )
        and ran.stderr == f"job 1 complains\njob {a} complains\njob {b} complains\n"
        for a, b in ((2, 3), (3, 2))
    ), ran.stdout + ran.stderr


# -- live output ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("executor", [False, True], ids=["Server", "Executor"])
def test_live_output_shows_each_line_while_the_job_runs(
    module_mode: dict[str, str], executor: bool, tmp_path: Path
) -> None:
    node = module_mode["PPSERVER"] if module_mode else "local"
    marker = tmp_path / "seen"
    env = {**module_mode, "MARKER": str(marker), **({"EXECUTOR": "1"} if executor else {})}
    first = f"[job 0 on {node}] step 1 of 2\n"
    ran = _run_with([sys.executable, str(SCRIPTS / "output_live.py")], env, when_seen={first: marker})
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == (
        f"{first}[job 0 on {node}] step 2 of 2\n[job 0 on {node}] finished\nvalue 42\n"
        + ("" if executor else "again 42\n")
    )
    assert ran.stderr == f"[job 0 on {node}] a warning on the way\n"


def test_live_output_of_a_dial_in_worker_reaches_the_client_through_its_ppserver(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    try:
        server = cluster.ppserver(workers=0, extra=("--accept-workers",))
        dialin = cluster.dialin(server, workers=1)
        wait_until(
            lambda: "serving ppserver" in cluster.read_log(dialin) or dialin.popen.poll() is not None,
            30,
            "the dial-in worker",
        )
        node = server.address
        marker = tmp_path / "seen"
        first = f"[job 0 on {node}] step 1 of 2\n"
        ran = _run_with(
            [sys.executable, str(SCRIPTS / "output_live.py")],
            {"PPSERVER": node, "MARKER": str(marker)},
            when_seen={first: marker},
        )
    finally:
        cluster.close()
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith(first + f"[job 0 on {node}] step 2 of 2\n"), ran.stdout
    assert ran.stderr == f"[job 0 on {node}] a warning on the way\n"


def test_live_output_from_a_protocol_1_ppserver_shows_at_the_end_and_says_why(
    protocol_1_ppserver: dict[str, str], tmp_path: Path
) -> None:
    marker = tmp_path / "seen"
    marker.touch()  # the job cannot wait for a line that version 1 cannot send while it runs
    node = protocol_1_ppserver["PPSERVER"]
    env = {**protocol_1_ppserver, "MARKER": str(marker)}
    ran = _run_with([sys.executable, str(SCRIPTS / "output_live.py")], env)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == (
        f"[job 0 on {node}] step 1 of 2\n[job 0 on {node}] a warning on the way\n"
        f"[job 0 on {node}] step 2 of 2\n[job 0 on {node}] finished\nvalue 42\nagain 42\n"
    )
    assert ran.stderr.count("speaks protocol version 1 (ppft 2.0.0): live_output cannot show") == 1


# -- helpers -------------------------------------------------------------------------------------------


class _Ran:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


def _run_with(
    argv: list[str],
    env: dict[str, str],
    *,
    when_seen: dict[str, Path] | None = None,
    stderr_first: str = "",
    timeout: float = 90.0,
) -> _Ran:
    """Run `argv` (a user's script) in its own session; while it runs, create `when_seen[line]` as soon as
    `line` appears on its stdout. `stderr_first`: read nothing of its stdout until this text appears on its
    stderr. Ends it (and whatever it started) by its process group."""
    full_env = dict(os.environ, PPFT_SECRET=SECRET, PYTHONUNBUFFERED="1")
    full_env.pop("PPSERVER", None)
    full_env.update(env)
    proc = subprocess.Popen(
        argv,
        cwd=SCRIPTS,
        env=full_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    pending = dict(when_seen or {})
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    chunks = {out_fd: bytearray(), err_fd: bytearray()}
    deadline = time.monotonic() + timeout
    try:
        open_fds = set(chunks)
        while open_fds:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"{argv[-1]} ran over {timeout} s\n--- stdout\n{chunks[out_fd].decode()}")
            waiting = stderr_first and stderr_first not in chunks[err_fd].decode("utf-8", "replace")
            watched = [fd for fd in open_fds if not (waiting and fd == out_fd)]
            ready, _, _ = select.select(watched, [], [], min(left, 1.0))
            for fd in ready:
                data = os.read(fd, 65536)
                if not data:
                    open_fds.discard(fd)
                    continue
                chunks[fd] += data
            out = chunks[out_fd].decode("utf-8", "replace")
            for line, marker in list(pending.items()):
                if line in out:
                    marker.touch()
                    del pending[line]
        code = proc.wait(max(1.0, deadline - time.monotonic()))
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    return _Ran(code, chunks[out_fd].decode("utf-8", "replace"), chunks[err_fd].decode("utf-8", "replace"))
