"""ppserver's command line: every classic flag (short and long), the config file and its precedence, one
clear line and the right exit status for bad input, and the daemon's behaviour (pid file, signals, -t)."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ppft_server.cli import parse_settings
from ppft_server.settings import DEFAULT_LOG_FORMAT, ConfigError, Settings, UsageError, read_config

# -- parsing (in process) -------------------------------------------------------------------------------


def test_defaults_are_ppft_defaults() -> None:
    settings = parse_settings([])
    assert (settings.port, settings.interface, settings.broadcast) == (60000, "0.0.0.0", "255.255.255.255")
    assert settings.workers is None  # autodetect
    assert (settings.debug, settings.autodiscovery, settings.restart) == (False, False, False)
    assert (settings.timeout, settings.socket_timeout, settings.pid_file) == (None, 3600.0, None)
    assert (settings.secret, settings.secret_file, settings.proto) == (None, None, None)
    assert settings.log_format == DEFAULT_LOG_FORMAT


FLAGS: list[tuple[str, str, str | None, str, Any]] = [
    # short, long, value given, Settings attribute, value expected
    ("-h", "--help", None, "help", True),
    ("-d", "--debug", None, "debug", True),
    ("-f", "--log-format", "%(message)s", "log_format", "%(message)s"),
    ("-a", "--autodiscovery", None, "autodiscovery", True),
    ("-r", "--restart", None, "restart", True),
    ("-n", "--proto", "2", "proto", 2),
    ("-i", "--interface", "127.0.0.1", "interface", "127.0.0.1"),
    ("-b", "--broadcast", "127.255.255.255", "broadcast", "127.255.255.255"),
    ("-p", "--port", "35000", "port", 35000),
    ("-w", "--workers", "3", "workers", 3),
    ("-s", "--secret", "s3cret", "secret", "s3cret"),
    ("-t", "--timeout", "1.5", "timeout", 1.5),
    ("-k", "--socket-timeout", "30", "socket_timeout", 30.0),
    ("-P", "--pid-file", "/tmp/x.pid", "pid_file", "/tmp/x.pid"),
]


@pytest.mark.parametrize("form", ["short", "long"])
@pytest.mark.parametrize(
    ("short", "long", "value", "attribute", "expected"), FLAGS, ids=[f[1] for f in FLAGS]
)
def test_flag_sets_its_setting(
    form: str, short: str, long: str, value: str | None, attribute: str, expected: Any
) -> None:
    flag = short if form == "short" else long
    argv = [flag] if value is None else [flag, value]
    assert getattr(parse_settings(argv), attribute) == expected


def test_secret_file_flag_sets_its_setting() -> None:
    assert parse_settings(["--secret-file", "/x/secret"]).secret_file == "/x/secret"


@pytest.mark.parametrize("flag", ["-c", "--config"])
def test_config_flag_reads_the_file(flag: str, tmp_path: Path) -> None:
    path = tmp_path / "pp.ini"
    path.write_text("[network]\nport = 35001\n")
    settings = parse_settings([flag, str(path)])
    assert (settings.config, settings.port) == (str(path), 35001)


def test_short_flags_combine_as_with_getopt() -> None:
    settings = parse_settings(["-dar", "-p35002", "-w2"])
    assert (settings.debug, settings.autodiscovery, settings.restart) == (True, True, True)
    assert (settings.port, settings.workers) == (35002, 2)


def test_workers_autodetect_word_means_autodetect() -> None:
    assert parse_settings(["-w", "autodetect"]).workers is None


def test_proto_minus_one_means_the_highest() -> None:
    import pickle

    assert parse_settings(["-n", "-1"]).proto == pickle.HIGHEST_PROTOCOL


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["-x"], "unrecognized arguments: -x"),
        (["stray"], "unrecognized arguments: stray"),
        (["-p"], "expected one argument"),
        (["-p", "http"], "'http' is not a port number"),
        (["-p", "65536"], "'65536' is not a port number"),
        (["-w", "-1"], "'-1' is not a worker count"),
        (["-n", "99"], "'99' is not a pickle protocol"),
        (["-t", "0"], "'0' is not a number of seconds"),
        (["-k", "soon"], "'soon' is not a number of seconds"),
        (["-b", "everyone"], "'everyone' is not an IPv4 broadcast address"),
        (["--sec", "x"], "unrecognized arguments: --sec"),  # no abbreviations: --sec is not --secret
    ],
)
def test_bad_command_line_is_a_usage_error(argv: list[str], reason: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_settings(argv)
    assert reason in str(info.value)


# -- the config file ------------------------------------------------------------------------------------

FULL_CONFIG = """\
# ppft's own example layout
[general]
debug = True
workers = 3
secret = "from the file"
proto = 2
restart = yes
pid_file = /tmp/from-config.pid

[network]
autodiscovery = on
interface = 127.0.0.1
broadcast = 127.255.255.255
port = 35010
timeout = 7
socket_timeout = 40  # seconds
"""


def write(tmp_path: Path, text: str, name: str = "ppserver.ini") -> str:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


def test_config_file_sets_every_known_key(tmp_path: Path) -> None:
    values, warnings = read_config(write(tmp_path, FULL_CONFIG))
    assert values == {
        "debug": True,
        "workers": 3,
        "secret": "from the file",
        "proto": 2,
        "restart": True,
        "pid_file": "/tmp/from-config.pid",
        "autodiscovery": True,
        "interface": "127.0.0.1",
        "broadcast": "127.255.255.255",
        "port": 35010,
        "timeout": 7.0,
        "socket_timeout": 40.0,
    }
    assert warnings == []


def test_config_file_may_name_a_secret_file(tmp_path: Path) -> None:
    values, _ = read_config(write(tmp_path, "[general]\nsecret_file = '/etc/ppft/secret'  # shared\n"))
    assert values == {"secret_file": "/etc/ppft/secret"}


def test_flags_override_the_config_file_wherever_they_stand(tmp_path: Path) -> None:
    path = write(tmp_path, FULL_CONFIG)
    before = parse_settings(["-p", "35011", "-w", "1", "-c", path, "-i", "0.0.0.0"])
    after = parse_settings(["-c", path, "-p", "35011", "-w", "1", "-i", "0.0.0.0"])
    for settings in (before, after):
        assert (settings.port, settings.workers, settings.interface) == (35011, 1, "0.0.0.0")
        assert (settings.broadcast, settings.timeout, settings.socket_timeout) == (
            "127.255.255.255",
            7.0,
            40.0,
        )


def test_secret_on_the_command_line_beats_the_config_files(tmp_path: Path) -> None:
    path = write(tmp_path, FULL_CONFIG)
    assert parse_settings(["-c", path, "-s", "flag"]).secret == "flag"
    by_file = parse_settings(["-c", path, "--secret-file", "/x/secret"])
    assert (by_file.secret, by_file.secret_file) == (None, "/x/secret")


def test_config_file_without_flags_keeps_its_values(tmp_path: Path) -> None:
    settings = parse_settings(["-c", write(tmp_path, FULL_CONFIG)])
    assert (settings.port, settings.workers, settings.debug, settings.secret) == (
        35010,
        3,
        True,
        "from the file",
    )


def test_unknown_config_key_and_section_are_warned_about(tmp_path: Path) -> None:
    path = write(tmp_path, "[general]\nworkers = 2\ncolour = blue\n[extra]\nx = 1\n")
    values, warnings = read_config(path)
    assert values == {"workers": 2}
    assert any("unknown key 'colour' in [general]" in w for w in warnings)
    assert any("unknown section [extra]" in w for w in warnings)


def test_readable_config_file_holding_a_secret_is_warned_about(tmp_path: Path) -> None:
    path = write(tmp_path, "[general]\nsecret = s\n")
    os.chmod(path, 0o644)
    _, warnings = read_config(path)
    assert any("chmod 600" in w for w in warnings)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[network]\nport = many\n", "[network] port: 'many' is not a port number"),
        ("[general]\nworkers = -3\n", "[general] workers: '-3' is not a worker count"),
        ("[general]\ndebug = perhaps\n", "[general] debug: 'perhaps' is not a boolean"),
        ("[network]\ntimeout = never\n", "[network] timeout: 'never' is not a number of seconds"),
        ("workers = 2\n", "cannot be parsed"),
        ("[general]\nworkers = 1\nworkers = 2\n", "cannot be parsed"),
    ],
)
def test_bad_config_file_is_a_config_error(tmp_path: Path, text: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        read_config(write(tmp_path, text))
    assert reason in str(info.value)


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        parse_settings(["-c", str(tmp_path / "nowhere.ini")])


def test_settings_is_what_parse_settings_returns() -> None:
    assert isinstance(parse_settings([]), Settings)


def test_ipv6_interface_with_autodiscovery_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="broadcasts over IPv4"):
        parse_settings(["-a", "-i", "::1"])


# -- main() hands every setting to the server (in process, with a stand-in server) ---------------------


class FakeServer:
    """Records how main() built it; serves by returning at once."""

    made: list[FakeServer] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.name = "fake"
        self.served = False
        FakeServer.made.append(self)

    def bind(self) -> tuple[str, int]:
        return ("127.0.0.1", 1234)

    def serve_forever(self) -> None:
        self.served = True

    def stop(self, reason: str = "") -> None:
        pass


@pytest.fixture
def fake_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeServer]]:
    import logging

    import ppft_server.node

    monkeypatch.setattr(ppft_server.node, "NodeServer", FakeServer)
    FakeServer.made = []
    ppft = logging.getLogger("ppft")
    saved = (list(ppft.handlers), ppft.propagate, ppft.level, logging.getLogger("ppft.ppserver").level)
    try:
        yield FakeServer
    finally:  # main() configures logging for a process; give the test process its own back
        ppft.handlers[:], ppft.propagate, ppft.level = saved[0], saved[1], saved[2]
        logging.getLogger("ppft.ppserver").setLevel(saved[3])


def test_main_hands_every_setting_to_the_server(fake_server: type[FakeServer]) -> None:
    from ppft_server.cli import main

    argv = ["-i", "127.0.0.1", "-p", "1234", "-w", "2", "-s", "s3cret", "-r", "-k", "30", "-t", "5"]
    assert main(argv) == 0
    (server,) = fake_server.made
    assert server.served
    assert server.kwargs == {
        "host": "127.0.0.1",
        "port": 1234,
        "secret": b"s3cret",
        "workers": 2,
        "restart": True,
        "socket_timeout": 30.0,
        "idle_timeout": 5.0,
        "allow_plain_loopback": False,
        "worker_secret": None,
        "accept_workers": False,
        "max_handshakes": 100,
        "max_handshakes_per_host": 20,
        "max_queued_jobs": None,
    }


def test_main_autodetects_workers_by_default(fake_server: type[FakeServer]) -> None:
    from ppft_server.cli import main
    from ppft_server.settings import detect_workers

    assert main(["-s", "x"]) == 0
    (server,) = fake_server.made
    assert server.kwargs["workers"] == detect_workers() >= 1
    assert (server.kwargs["host"], server.kwargs["port"], server.kwargs["idle_timeout"]) == (
        "0.0.0.0",
        60000,
        None,
    )


def test_main_restores_the_signal_handlers_it_set(fake_server: type[FakeServer]) -> None:
    from ppft_server.cli import main

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    assert main(["-s", "x"]) == 0
    assert {s: signal.getsignal(s) for s in before} == before


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


def test_bad_config_value_exits_2_with_one_line_naming_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[network]\nport = many\n")
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
    start_ppserver: Callable[..., Any], free_port: int, tmp_path: Path
) -> None:
    path = write(tmp_path, "[general]\nworkers = 1\n[network]\nport = 1\ninterface = 127.0.0.1\n")
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
