"""ppserver as a process: one clear line and the right exit status for bad input, and the daemon's behaviour
(its start-up line, worker processes, logging, pid file, signals, -t). Parsing and the config file, in
process: test_cli.py."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# -- the process: bad input -----------------------------------------------------------------------------


def run_ppserver(
    *args: str, home: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "HOME": str(home), "PPFT_SECRET": "test-secret", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "ppft_server", *args],
        capture_output=True,
        text=True,
        env=full,
        cwd=home,
        timeout=60,
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ppserver: error: "), lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["-p", "70000"], "'70000' is not a port number"),
        (["-w", "many"], "'many' is not a worker count"),
        (["-f", "%(nosuchfield)s"], "log format '%(nosuchfield)s' is not usable"),
    ],
)
def test_bad_flag_exits_2_with_one_line(tmp_path: Path, args: list[str], reason: str) -> None:
    result = run_ppserver(*args, home=tmp_path)
    assert result.returncode == 2
    assert reason in one_error_line(result)


def test_bad_config_value_exits_2_with_one_line_naming_the_key(
    tmp_path: Path, config_file: Callable[..., str]
) -> None:
    path = config_file("[network]\nport = many\n")
    result = run_ppserver("-c", path, home=tmp_path)
    assert result.returncode == 2
    line = one_error_line(result)
    assert path in line and "[network] port" in line and "fix or remove that line" in line


def test_missing_config_file_exits_2_with_one_line(tmp_path: Path) -> None:
    result = run_ppserver("-c", "nowhere.ini", home=tmp_path)
    assert result.returncode == 2
    assert "config file nowhere.ini does not exist" in one_error_line(result)


def test_help_exits_0_listing_every_flag(tmp_path: Path) -> None:
    result = run_ppserver("--help", home=tmp_path)
    assert result.returncode == 0
    for flag in (
        "-d",
        "-f",
        "-a",
        "-r",
        "-n",
        "-c",
        "-i",
        "-b",
        "-p",
        "-w",
        "-s",
        "-t",
        "-k",
        "-P",
        "--secret-file",
    ):
        assert f"{flag} " in result.stdout or f"{flag}," in result.stdout
    assert "SIGUSR1" in result.stdout


def test_port_in_use_exits_1_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_ppserver("-i", "127.0.0.1", "-p", str(port), "-w", "1", home=tmp_path)
    assert result.returncode == 1
    line = one_error_line(result)
    assert f"cannot listen on 127.0.0.1:{port}" in line and "in use" in line and "-p" in line


def test_group_readable_secret_file_is_refused_with_exit_2(tmp_path: Path) -> None:
    secret = tmp_path / ".ppft" / "secret"
    secret.parent.mkdir(mode=0o700)
    secret.write_text("shared\n")
    secret.chmod(0o640)
    result = run_ppserver("-p", "0", home=tmp_path, env={"PPFT_SECRET": ""})
    assert result.returncode == 2
    line = one_error_line(result)
    assert str(secret) in line and f"chmod 600 {secret}" in line


def test_missing_secret_file_flag_is_refused_with_exit_2(tmp_path: Path) -> None:
    result = run_ppserver("--secret-file", str(tmp_path / "none"), "-p", "0", home=tmp_path)
    assert result.returncode == 2
    assert "does not exist" in one_error_line(result)


def test_unwritable_pid_file_exits_1_with_one_line(tmp_path: Path, free_port: int) -> None:
    pid_file = tmp_path / "no-such-dir" / "pp.pid"
    result = run_ppserver("-p", str(free_port), "-w", "1", "-P", str(pid_file), home=tmp_path)
    assert result.returncode == 1
    assert f"cannot write the pid file {pid_file}" in one_error_line(result)


# -- the process: running -------------------------------------------------------------------------------


def test_startup_line_names_version_address_and_workers(
    start_ppserver: Callable[..., Any], free_port: int
) -> None:
    from ppft_server import __version__

    server = start_ppserver("-i", "127.0.0.1", "-p", str(free_port), "-w", "2")
    match = server.wait_for_line(
        r"ppserver (\S+) \(pid (\d+)\) listening on 127\.0\.0\.1:(\d+) with 2 worker"
    )
    assert (match.group(1), int(match.group(2)), int(match.group(3))) == (__version__, server.pid, free_port)


def test_workers_flag_starts_that_many_worker_processes(
    start_ppserver: Callable[..., Any], free_port: int, children_of: Callable[[int], list[int]]
) -> None:
    server = start_ppserver("-p", str(free_port), "-w", "3")
    server.wait_started()
    assert len(server.workers(3)) == 3


def test_without_debug_only_warnings_and_the_startup_line_are_logged(
    start_ppserver: Callable[..., Any], free_port: int
) -> None:
    server = start_ppserver("-p", str(free_port), "-w", "1", "-t", "0.5")
    server.wait_started()
    assert server.wait() == 0
    logged = [line for line in server.stderr.splitlines() if " - " in line]
    assert len(logged) == 2, logged  # started, stopped
    assert all(" - INFO - " in line for line in logged)


def test_debug_flag_logs_debug_lines(start_ppserver: Callable[..., Any], free_port: int) -> None:
    server = start_ppserver("-d", "-p", str(free_port), "-w", "1")
    server.wait_started()
    server.wait_for_line(r" - DEBUG - ")


def test_log_format_flag_formats_the_log(start_ppserver: Callable[..., Any], free_port: int) -> None:
    server = start_ppserver("-f", "PPLOG|%(levelname)s|%(message)s", "-p", str(free_port), "-w", "1")
    server.wait_for_line(r"^PPLOG\|INFO\|ppserver \S+ \(pid \d+\) listening on")


def test_config_file_values_are_used_and_flags_win(
    start_ppserver: Callable[..., Any], free_port: int, config_file: Callable[..., str]
) -> None:
    path = config_file("[general]\nworkers = 1\n[network]\nport = 1\ninterface = 127.0.0.1\n")
    server = start_ppserver("-c", path, "-p", str(free_port))
    match = server.wait_for_line(r"listening on 127\.0\.0\.1:(\d+) with (\d+) worker")
    assert (int(match.group(1)), int(match.group(2))) == (free_port, 1)


def test_missing_per_user_secret_file_is_created_private(
    start_ppserver: Callable[..., Any], free_port: int, tmp_path: Path
) -> None:
    server = start_ppserver("-p", str(free_port), "-w", "1", env={"PPFT_SECRET": None})
    server.wait_started()
    mode = stat.S_IMODE((tmp_path / ".ppft" / "secret").stat().st_mode)
    assert mode == 0o600


def test_pid_file_is_written_and_removed_on_sigterm(
    start_ppserver: Callable[..., Any], free_port: int, tmp_path: Path
) -> None:
    pid_file = tmp_path / "ppserver.pid"
    server = start_ppserver("-p", str(free_port), "-w", "1", "-P", str(pid_file))
    server.wait_started()
    assert pid_file.read_text() == f"{server.pid}\n"
    server.proc.send_signal(signal.SIGTERM)
    assert server.wait() == 0
    assert not pid_file.exists()


def test_pid_file_is_removed_after_idle_timeout(
    start_ppserver: Callable[..., Any], free_port: int, tmp_path: Path
) -> None:
    pid_file = tmp_path / "ppserver.pid"
    server = start_ppserver("-p", str(free_port), "-w", "1", "-P", str(pid_file), "-t", "0.5")
    server.wait_started()
    assert server.wait() == 0
    assert not pid_file.exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_leaves_no_worker_behind(
    start_ppserver: Callable[..., Any],
    free_port: int,
    pid_alive: Callable[[int], bool],
    wait_until: Callable[..., None],
    signum: int,
) -> None:
    server = start_ppserver("-p", str(free_port), "-w", "2")
    server.wait_started()
    workers = server.workers(2)
    server.proc.send_signal(signum)
    assert server.wait() == 0
    wait_until(lambda: not any(pid_alive(pid) for pid in workers), 10, "the workers to exit")
    assert f"ppserver stopped ({signal.Signals(signum).name})" in server.stderr


def test_sigusr1_prints_the_stats_table_and_keeps_serving(
    start_ppserver: Callable[..., Any], free_port: int
) -> None:
    server = start_ppserver("-p", str(free_port), "-w", "1")
    server.wait_started()
    mark = len(server.lines)
    server.proc.send_signal(signal.SIGUSR1)
    server.wait_for_line(
        r"job count \| % of all jobs \| job time sum \| time per job \| job server", start=mark
    )
    assert server.proc.poll() is None
    with socket.create_connection(("127.0.0.1", free_port), timeout=5):
        pass  # still accepting


def test_idle_timeout_exits_by_itself_with_0(start_ppserver: Callable[..., Any], free_port: int) -> None:
    server = start_ppserver("-p", str(free_port), "-w", "1", "-t", "1")
    server.wait_started()
    started = time.monotonic()
    assert server.wait(15) == 0
    assert time.monotonic() - started < 10
