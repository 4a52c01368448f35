"""`--allow-plain-loopback` (and `[network] allow_plain_loopback` in the config file): off unless asked for,
parsed like every other boolean, handed to the server, and announced on the startup line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ppft_server.cli import parse_settings
from ppft_server.settings import ConfigError, read_config


def config(tmp_path: Path, value: str) -> str:
    path = tmp_path / "ppserver.ini"
    path.write_text(f"[network]\nallow_plain_loopback = {value}\n")
    path.chmod(0o600)
    return str(path)


def test_it_is_off_by_default() -> None:
    assert parse_settings([]).allow_plain_loopback is False


def test_the_flag_turns_it_on() -> None:
    assert parse_settings(["--allow-plain-loopback"]).allow_plain_loopback is True


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("yes", True), ("off", False), ("0", False)])
def test_the_config_file_sets_it(tmp_path: Path, value: str, expected: bool) -> None:
    assert parse_settings(["-c", config(tmp_path, value)]).allow_plain_loopback is expected


def test_the_flag_wins_over_the_config_file_wherever_it_stands(tmp_path: Path) -> None:
    path = config(tmp_path, "false")
    assert parse_settings(["--allow-plain-loopback", "-c", path]).allow_plain_loopback is True
    assert parse_settings(["-c", path, "--allow-plain-loopback"]).allow_plain_loopback is True


def test_a_bad_config_value_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[network\] allow_plain_loopback: 'sometimes' is not a boolean"):
        read_config(config(tmp_path, "sometimes"))


def test_the_flag_takes_no_value() -> None:
    from ppft_server.settings import UsageError

    with pytest.raises(UsageError, match="ignored explicit argument"):
        parse_settings(["--allow-plain-loopback=yes"])


def test_main_hands_the_flag_to_the_server(fake_server: type[Any]) -> None:
    from ppft_server.cli import main

    assert main(["-s", "x", "-p", "1234", "--allow-plain-loopback"]) == 0
    (server,) = fake_server.made
    assert server.kwargs["allow_plain_loopback"] is True


def test_help_lists_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    from ppft_server.cli import main

    assert main(["--help"]) == 0
    assert "--allow-plain-loopback" in capsys.readouterr().out


def test_startup_line_says_unsealed_links_are_granted(
    start_ppserver: Callable[..., Any], free_port: int
) -> None:
    server = start_ppserver("-i", "127.0.0.1", "-p", str(free_port), "-w", "1", "--allow-plain-loopback")
    server.wait_for_line(r"listening on 127\.0\.0\.1:\d+ with 1 worker\(s\), unsealed links granted")


def test_startup_line_says_nothing_of_it_when_off(start_ppserver: Callable[..., Any], free_port: int) -> None:
    server = start_ppserver("-i", "127.0.0.1", "-p", str(free_port), "-w", "1")
    match = server.wait_for_line(r"listening on 127\.0\.0\.1:\d+ with 1 worker.*")
    assert "unsealed" not in match.group(0)
