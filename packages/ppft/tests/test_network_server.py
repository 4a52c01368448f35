"""`ppft.server`: ppserver as a library, as ppft 1.7's create_network_server/parse_config/print_usage."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator

import pytest

from ppft.server import (
    ConfigError,
    NetworkServer,
    UsageError,
    create_network_server,
    parse_config,
    print_usage,
)


@pytest.fixture(autouse=True)
def _restore_ppft_logger() -> Iterator[None]:
    """create_network_server configures the "ppft" logger, as ppft 1.7 did: put it back after each test."""
    logger = logging.getLogger("ppft")
    saved = (logger.level, list(logger.handlers), logger.propagate)
    yield
    logger.setLevel(saved[0])
    logger.handlers[:] = saved[1]
    logger.propagate = saved[2]


def serve_in_thread(server: NetworkServer) -> threading.Thread:
    thread = threading.Thread(target=server.listen, name="test-ppserver", daemon=True)
    thread.start()
    return thread


def test_created_server_is_bound_with_the_port_known(network_server) -> None:
    assert network_server.host == "127.0.0.1" and network_server.port > 0
    assert network_server.get_ncpus() == 1


def _counted(table: str) -> int:
    """The jobs a ppft-style statistics table counts, over its rows."""
    return sum(int(line.split("|")[0]) for line in table.splitlines() if line.split("|")[0].strip().isdigit())


def test_created_server_runs_a_clients_jobs(network_server, make_server) -> None:
    thread = serve_in_thread(network_server)
    client = make_server(0, ppservers=(f"127.0.0.1:{network_server.port}",))
    jobs = [client.submit(pow, (2, n)) for n in range(5)]
    assert [job.result(timeout=30) for job in jobs] == [1, 2, 4, 8, 16]
    # five jobs counted by the ppserver: those of its direct workers as they report them, within a second
    deadline = time.monotonic() + 10
    while _counted(network_server.stats_table()) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _counted(network_server.stats_table()) == 5, network_server.stats_table()
    network_server.stop()
    thread.join(30)
    assert not thread.is_alive()


def test_pid_file_is_written_then_removed_when_serving_ends(network_server, tmp_path) -> None:
    pid_file = tmp_path / "ppserver.pid"
    assert pid_file.read_text().strip() == str(os.getpid())
    thread = serve_in_thread(network_server)
    network_server.stop()
    thread.join(30)
    assert not pid_file.exists()


def test_destroy_without_serving_releases_everything_and_is_idempotent(network_server, tmp_path) -> None:
    network_server.destroy()
    network_server.destroy()
    assert not (tmp_path / "ppserver.pid").exists()
    with pytest.raises(Exception, match="was stopped"):
        network_server.listen()


def test_dash_h_prints_the_usage_and_exits_0(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        create_network_server(["-h"])
    assert info.value.code == 0
    assert "usage: ppserver" in capsys.readouterr().out


def test_a_bad_flag_raises_usage_error() -> None:
    with pytest.raises(UsageError, match="no-such-flag"):
        create_network_server(["--no-such-flag"])


def test_print_usage_lists_every_classic_flag(capsys) -> None:
    print_usage()
    out = capsys.readouterr().out
    for flag in ("-d", "-f", "-a", "-r", "-n", "-c", "-i", "-b", "-p", "-w", "-s", "-t", "-k", "-P"):
        assert f"{flag} " in out or f"{flag}," in out


def test_parse_config_returns_ppft_17_arguments(tmp_path) -> None:
    config = tmp_path / "ppserver.ini"
    config.write_text(
        "[general]\nsecret = abc\nworkers = 3\ndebug = true\nrestart = no\n"
        "[network]\nautodiscovery = yes\nport = 35000\ninterface = 127.0.0.1\ntimeout = 30\n"
    )
    config.chmod(0o600)
    args, autodiscovery, debug = parse_config(str(config))
    assert args == {
        "secret": "abc", "ncpus": 3, "restart": False, "port": 35000, "interface": "127.0.0.1",
        "timeout": 30.0,
    }  # fmt: skip
    assert autodiscovery is True and debug is True


def test_parse_config_of_a_missing_file_raises_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        parse_config(str(tmp_path / "missing.ini"))
