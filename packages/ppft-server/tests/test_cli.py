"""ppserver's command line, in process: every classic flag (short and long), the config file and its
precedence, and `main` handing every setting to the server. ppserver as a process: test_cli_process.py."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
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


def test_worker_limits_flags() -> None:
    settings = parse_settings(["--worker-memory-limit", "1.5GiB", "--max-jobs-per-worker", "1000"])
    assert (settings.worker_memory_limit, settings.max_jobs_per_worker) == (3 << 29, 1000)
    assert (Settings().worker_memory_limit, Settings().max_jobs_per_worker) == (None, None)


def test_direct_workers_flag_and_config_key(config_file: Callable[..., str]) -> None:
    assert parse_settings([]).direct_workers is None  # as many as -w
    assert parse_settings(["--direct-workers", "0"]).direct_workers == 0
    assert parse_settings(["-c", config_file("[general]\ndirect_workers = 3\n")]).direct_workers == 3


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
        (["--worker-memory-limit", "2 gigs"], "the worker memory limit must be a size such as '2GiB'"),
        (["--worker-memory-limit", "100"], "the worker memory limit must be at least 1 MiB"),
        (["--max-jobs-per-worker", "0"], "'0' is not a count"),
        (["--direct-workers", "-1"], "'-1' is not a count of direct workers"),
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


def test_config_file_sets_every_known_key(config_file: Callable[..., str]) -> None:
    values, warnings = read_config(config_file(FULL_CONFIG))
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


def test_config_file_may_name_a_secret_file(config_file: Callable[..., str]) -> None:
    values, _ = read_config(config_file("[general]\nsecret_file = '/etc/ppft/secret'  # shared\n"))
    assert values == {"secret_file": "/etc/ppft/secret"}


def test_flags_override_the_config_file_wherever_they_stand(config_file: Callable[..., str]) -> None:
    path = config_file(FULL_CONFIG)
    before = parse_settings(["-p", "35011", "-w", "1", "-c", path, "-i", "0.0.0.0"])
    after = parse_settings(["-c", path, "-p", "35011", "-w", "1", "-i", "0.0.0.0"])
    for settings in (before, after):
        assert (settings.port, settings.workers, settings.interface) == (35011, 1, "0.0.0.0")
        assert (settings.broadcast, settings.timeout, settings.socket_timeout) == (
            "127.255.255.255",
            7.0,
            40.0,
        )


def test_secret_on_the_command_line_beats_the_config_files(config_file: Callable[..., str]) -> None:
    path = config_file(FULL_CONFIG)
    assert parse_settings(["-c", path, "-s", "flag"]).secret == "flag"
    by_file = parse_settings(["-c", path, "--secret-file", "/x/secret"])
    assert (by_file.secret, by_file.secret_file) == (None, "/x/secret")


def test_config_file_without_flags_keeps_its_values(config_file: Callable[..., str]) -> None:
    settings = parse_settings(["-c", config_file(FULL_CONFIG)])
    assert (settings.port, settings.workers, settings.debug, settings.secret) == (
        35010,
        3,
        True,
        "from the file",
    )


def test_unknown_config_key_and_section_are_warned_about(config_file: Callable[..., str]) -> None:
    path = config_file("[general]\nworkers = 2\ncolour = blue\n[extra]\nx = 1\n")
    values, warnings = read_config(path)
    assert values == {"workers": 2}
    assert any("unknown key 'colour' in [general]" in w for w in warnings)
    assert any("unknown section [extra]" in w for w in warnings)


def test_readable_config_file_holding_a_secret_is_warned_about(config_file: Callable[..., str]) -> None:
    path = config_file("[general]\nsecret = s\n")
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
def test_bad_config_file_is_a_config_error(config_file: Callable[..., str], text: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        read_config(config_file(text))
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


def test_main_hands_every_setting_to_the_server(fake_server: type[Any]) -> None:
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
        "worker_memory_limit": None,
        "max_jobs_per_worker": None,
        "refs_memory": 4 << 30,
        "direct_workers": None,
    }


def test_main_autodetects_workers_by_default(fake_server: type[Any]) -> None:
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


def test_main_restores_the_signal_handlers_it_set(fake_server: type[Any]) -> None:
    from ppft_server.cli import main

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    assert main(["-s", "x"]) == 0
    assert {s: signal.getsignal(s) for s in before} == before
