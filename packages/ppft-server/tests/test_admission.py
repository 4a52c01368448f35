"""Dial-in workers are a separate grant: a worker proves the workers secret, a client cannot serve as one.

A dial-in worker receives every client's functions and arguments and returns their results, so holding the
client secret is not enough to become one. ppserver admits dial-in workers that prove `--workers-secret`
(or `--workers-secret-file`, the config file's `workers_secret`, `$PPFT_WORKERS_SECRET`); with
`--accept-workers` the client secret admits them too (ppft 2.0's behaviour); with neither, they are refused,
with a line naming the fix on both sides.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ppft_protocol import FunctionBody, NodeInfo

WORKERS = "the-workers-secret"


def capacity(peer: Any) -> int:
    infos = [e for e in peer.events if isinstance(e, NodeInfo)]
    return infos[-1].workers if infos else -1


def run_through_dial_in(connect: Callable[..., Any], port: int, echo: FunctionBody) -> None:
    client = connect(port).established()
    client.wait_for(lambda p: capacity(p) == 1, what="the dial-in worker's capacity")
    (result,) = client.run(echo, ("via the dial-in",))
    assert result.ok and pickle.loads(result.value) == "via the dial-in"


@pytest.fixture
def hub(start_ppserver: Callable[..., Any], free_port: int) -> Callable[..., Any]:
    """A ppserver with no workers of its own (only dial-in capacity) and these flags."""

    def start(*flags: str, env: dict[str, str | None] | None = None) -> Any:
        server = start_ppserver("-i", "127.0.0.1", "-p", str(free_port), "-w", "0", *flags, env=env)
        server.wait_started()
        return server

    return start


def test_by_default_dial_in_workers_are_refused_with_a_line_on_both_sides(
    hub: Callable[..., Any], start_dialin: Callable[..., Any], connect: Callable[..., Any], free_port: int
) -> None:
    server = hub()
    client = connect(free_port).established()
    dialin = start_dialin(free_port, "-w", "1", "--once")
    assert dialin.wait() == 1
    dialin.wait_for_line(
        r"ERROR ppserver 127\.0\.0\.1:\d+: session closed by the ppserver: dial-in worker refused: this "
        r"ppserver admits no dial-in workers: start it with --workers-secret-file PATH \(workers then prove "
        r"that secret\) or --accept-workers \(the client secret admits workers too\); not retrying"
    )
    server.wait_for_line(
        r"WARNING - closed the session of dial-in worker 127\.0\.0\.1:\d+: dial-in worker refused: this "
        r"ppserver admits no dial-in workers"
    )
    client.pump()
    assert capacity(client) == 0  # nothing was added to what clients are told


def test_a_worker_proving_the_workers_secret_serves_jobs(
    hub: Callable[..., Any], start_dialin: Callable[..., Any], connect: Callable[..., Any], free_port: int,
    bodies: dict[str, FunctionBody],
) -> None:  # fmt: skip
    server = hub("--workers-secret", WORKERS)
    server.wait_for_line(r"listening on .*, dial-in workers admitted with the workers secret$")
    start_dialin(free_port, "-w", "1", "-s", WORKERS)
    run_through_dial_in(connect, free_port, bodies["echo"])


def test_the_client_secret_does_not_admit_a_worker_and_the_workers_secret_no_client(
    hub: Callable[..., Any], start_dialin: Callable[..., Any], connect: Callable[..., Any], free_port: int
) -> None:
    server = hub("--workers-secret", WORKERS)
    dialin = start_dialin(free_port, "-w", "1", "--once")  # proves the client secret (PPFT_SECRET)
    assert dialin.wait() == 1
    dialin.wait_for_line(r"wrong secret")
    server.wait_for_line(
        r"refused dial-in worker from 127\.0\.0\.1:\d+: wrong secret: dial-in worker failed to prove it "
        r"knows the workers secret"
    )
    intruder = connect(free_port, WORKERS)
    assert "secrets differ" in intruder.wait_closed()
    server.wait_for_line(r"refused connection from 127\.0\.0\.1:\d+: wrong secret: client failed to prove")


def test_the_workers_secret_from_the_environment_and_a_file(
    hub: Callable[..., Any], start_dialin: Callable[..., Any], connect: Callable[..., Any], free_port: int,
    bodies: dict[str, FunctionBody], tmp_path: Path,
) -> None:  # fmt: skip
    path = tmp_path / "workers.secret"
    path.write_text(WORKERS + "\n")
    path.chmod(0o600)
    hub("--workers-secret-file", str(path))
    start_dialin(free_port, "-w", "1", env={"PPFT_WORKERS_SECRET": WORKERS})
    run_through_dial_in(connect, free_port, bodies["echo"])


def test_the_workers_secret_from_the_config_file(
    hub: Callable[..., Any], start_dialin: Callable[..., Any], connect: Callable[..., Any], free_port: int,
    bodies: dict[str, FunctionBody], tmp_path: Path,
) -> None:  # fmt: skip
    config = tmp_path / "ppserver.cfg"
    config.write_text(f"[general]\nworkers_secret = {WORKERS}\n")
    config.chmod(0o600)
    hub("-c", str(config))
    start_dialin(free_port, "-w", "1", "-s", WORKERS)
    run_through_dial_in(connect, free_port, bodies["echo"])


def test_accept_workers_lets_the_client_secret_admit_workers(
    hub: Callable[..., Any], start_dialin: Callable[..., Any], connect: Callable[..., Any], free_port: int,
    bodies: dict[str, FunctionBody],
) -> None:  # fmt: skip
    server = hub("--accept-workers")
    server.wait_for_line(
        r"listening on .*, dial-in workers admitted with the client secret \(--accept-workers\)"
    )
    start_dialin(free_port, "-w", "1")
    run_through_dial_in(connect, free_port, bodies["echo"])


@pytest.mark.parametrize(
    ("flags", "admitted", "why"),
    [
        ((), False, "this ppserver admits no dial-in workers"),
        (("--workers-secret", WORKERS), False, "which a ppft 2.0 worker cannot do: upgrade ppft"),
        (("--accept-workers",), True, ""),
    ],
    ids=["default", "workers-secret", "accept-workers"],
)
def test_a_ppft_2_0_dial_in_worker_needs_accept_workers(
    hub: Callable[..., Any], connect: Callable[..., Any], free_port: int, bodies: dict[str, FunctionBody],
    flags: tuple[str, ...], admitted: bool, why: str,
) -> None:  # fmt: skip
    """ppft 2.0's dial-in speaks protocol version 1: it proves the client secret and then says it is a
    worker, which only --accept-workers allows."""
    hub(*flags)
    legacy = connect(free_port, versions=(1, 1)).established()
    legacy.send(NodeInfo("worker", 1, "2.0.0", "old"))
    if not admitted:
        reason = legacy.wait_closed()
        assert "dial-in worker refused: " in reason and why in reason
        return
    client = connect(free_port).established()
    client.wait_for(lambda p: capacity(p) == 1, what="the legacy worker's capacity")


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["--accept-workers", "--workers-secret", "x"], {}),
        (["--accept-workers"], {"PPFT_WORKERS_SECRET": "x"}),
    ],
    ids=["flags", "environment"],
)
def test_accept_workers_and_a_workers_secret_conflict(argv: list[str], env: dict[str, str]) -> None:
    ran = subprocess.run(
        [sys.executable, "-m", "ppft_server", "-s", "s", "-p", "0", *argv],
        check=False, capture_output=True, text=True, timeout=60, env={**os.environ, **env},
    )  # fmt: skip
    assert ran.returncode == 2
    assert "--accept-workers lets the client secret admit dial-in workers" in ran.stderr


def test_help_lists_the_admission_flags() -> None:
    ran = subprocess.run(
        [sys.executable, "-m", "ppft_server", "-h"], check=False, capture_output=True, text=True, timeout=60
    )
    for flag in ("--workers-secret", "--workers-secret-file", "--accept-workers", "--max-handshakes",
                 "--max-handshakes-per-host", "--max-queued-jobs"):  # fmt: skip
        assert flag in ran.stdout
