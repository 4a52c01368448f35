"""ssh nodes that cannot be used, against a real sshd: each failure names the node and its cause, quotes
ssh's own message, says what to do, and (when retrying cannot cure it) fails jobs with NoNodeError rather
than let them wait. And what is not a failure: a chatty shell, an older protocol, an sshd that comes late."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ppft
from clusterlib import pid_alive, wait_until
from sshlib import Sshd, start_sshd
from sshlib import sshd as sshd  # noqa: PLC0414 - the fixture

pytestmark = pytest.mark.timeout(180)


def double(x):
    return 2 * x


def refusal(client: ppft.Server) -> str:
    """The NoNodeError message of a job on a client whose only node is refused for good."""
    with pytest.raises(ppft.NoNodeError) as info:
        client.submit(double, (1,)).result(timeout=60)
    return str(info.value)


def stdio_main(versions: tuple[int, int]) -> str:
    """The source of a remote side that speaks only protocol `versions`."""
    return (
        "import sys\nfrom ppft_worker.stdio import command\n"
        f"sys.exit(command.main(['--stdio', '-w', '1'], versions={versions!r}))\n"
    )


def fake_python(where: Path, body: str) -> str:
    """A 'python' for `?python=`: a shell script that runs `body` (Python) with this interpreter."""
    script = where / "fake-python"
    code = where / "fake.py"
    code.write_text(body)
    script.write_text(f"#!/bin/sh\nexec {sys.executable} {code}\n")
    script.chmod(0o755)
    return str(script)


def test_a_refused_key_quotes_ssh(sshd: Sshd, make_client, tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    client = make_client(0, ppservers=(sshd.entry(),), ssh=sshd.prefix(key=other))
    message = refusal(client)
    name = f"ssh://{sshd.user}@127.0.0.1"
    assert "and the ssh node refused this client for a reason that retrying will not cure" in message
    assert (
        f'{name}: ssh could not log in to {sshd.user}@127.0.0.1: "{sshd.user}@127.0.0.1: Permission denied'
        in message
    )
    assert "the remote ~/.ssh/authorized_keys" in message
    assert f"ssh node {name} cannot be used: ssh could not log in" in caplog.text


def test_a_missing_ppft_worker_names_the_python_and_the_pip_install(
    sshd: Sshd, make_client, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    venv = tmp_path / "bare-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    client = make_client(0, ppservers=(sshd.entry(python=python),), ssh=sshd.prefix())
    message = refusal(client)
    assert (
        f'ppft_worker is not installed for {python} on 127.0.0.1 ("{python}: No module named ppft_worker")'
        in message
    )
    assert f"install it there: {python} -m pip install ppft-worker==" in message


def test_a_missing_python(sshd: Sshd, make_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    python = str(tmp_path / "no" / "python")
    client = make_client(0, ppservers=(sshd.entry(python=python),), ssh=sshd.prefix())
    message = refusal(client)
    assert f"{python} cannot be run on 127.0.0.1" in message
    assert "No such file or directory" in message


def test_a_changed_host_key_is_refused(sshd: Sshd, make_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    impostor = tmp_path / "impostor"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(impostor)], check=True)
    known = tmp_path / "known_hosts_changed"
    known.write_text(f"[127.0.0.1]:{sshd.port} {impostor.with_suffix('.pub').read_text()}")
    client = make_client(0, ppservers=(sshd.entry(),), ssh=sshd.prefix(known_hosts=known))
    message = refusal(client)
    assert "the host key of 127.0.0.1 has changed, and ssh refused to connect" in message
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in message
    assert "double" not in sshd.read_log()


def test_an_unknown_host_key_is_refused(sshd: Sshd, make_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    known = tmp_path / "known_hosts_empty"
    known.write_text("")
    client = make_client(0, ppservers=(sshd.entry(),), ssh=sshd.prefix(known_hosts=known))
    message = refusal(client)
    assert "ssh could not verify the host key of 127.0.0.1" in message
    assert "Host key verification failed." in message


def test_no_sshd_there_keeps_jobs_waiting_and_says_why(tmp_path: Path, make_client, caplog) -> None:  # type: ignore[no-untyped-def]
    """Not listening is not a refusal: the node is retried with backoff, and is used once sshd is up."""
    from clusterlib import free_port

    port = free_port()
    entry = f"ssh://127.0.0.1:{port}?python={sys.executable}&workers=1"
    later = tmp_path / "later"
    late = None
    try:
        # a client with the key of an sshd that is not started yet
        late = start_sshd(later, port=port, start=False)
        client = make_client(0, ppservers=(entry,), ssh=late.prefix()[:-2])  # the port is in the entry
        job = client.submit(double, (21,))
        wait_until(lambda: "Connection refused" in caplog.text, 30, "the refusal in the log")
        assert (
            f"ssh node ssh://127.0.0.1:{port} cannot be used: ssh cannot connect to 127.0.0.1" in caplog.text
        )
        assert not job.done()
        late.start()
        assert job.result(timeout=60) == 42
        client.destroy()  # before its sshd goes
    finally:
        if late is not None:
            late.close()


def test_a_version_mismatch_says_both_versions(sshd: Sshd, make_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    python = fake_python(tmp_path, stdio_main((3, 3)))
    client = make_client(0, ppservers=(sshd.entry(python=python),), ssh=sshd.prefix())
    message = refusal(client)
    assert "no common protocol version: this client speaks ppft-protocol 1-2, the peer speaks 3-3" in message
    assert f"(ppft-worker {ppft.__version__} --stdio on " in message
    assert f"this client is ppft-client {ppft.__version__}" in message


def test_a_ppft_worker_without_stdio_is_named_too_old(sshd: Sshd, make_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """ppft-worker 2.0.0 has no --stdio: its argument parser refuses it (played here by the dial-in's)."""
    python = fake_python(
        tmp_path,
        "import sys\nfrom ppft_worker import dialin\nsys.exit(dialin.main(['--stdio', '-w', '1']))\n",
    )
    client = make_client(0, ppservers=(sshd.entry(python=python),), ssh=sshd.prefix())
    message = refusal(client)
    assert f"ppft-worker on 127.0.0.1 ({python}) is too old for ssh nodes (it has no --stdio" in message
    assert "unrecognized arguments: --stdio" in message


def test_a_remote_side_pinned_to_protocol_version_1_still_runs_jobs(
    sshd: Sshd, make_client, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    python = fake_python(tmp_path, stdio_main((1, 1)))
    client = make_client(0, ppservers=(sshd.entry(python=python),), ssh=sshd.prefix())
    assert [client.submit(double, (i,)).result(timeout=60) for i in range(5)] == [0, 2, 4, 6, 8]
    node = next(node for node in client._scheduler.nodes if node.name.startswith("ssh://"))
    assert node._established.version == 1


def test_a_shell_that_prints_before_ppft_worker_starts_is_skipped(
    sshd: Sshd, make_client, tmp_path: Path, caplog
) -> None:  # type: ignore[no-untyped-def]
    """A ~/.bashrc that echoes writes on the channel before our process exists: that text is skipped."""
    script = tmp_path / "chatty-python"
    banner = 'echo "Welcome to the cluster!"\nprintf "\\033[1mToday: maintenance\\n"\n'
    script.write_text(f'#!/bin/sh\n{banner}exec {sys.executable} "$@"\n')
    script.chmod(0o755)
    caplog.set_level(logging.WARNING)
    client = make_client(0, ppservers=(sshd.entry(python=str(script), workers=1),), ssh=sshd.prefix())
    assert client.submit(double, (4,)).result(timeout=60) == 8
    assert (
        "the remote wrote Welcome to the cluster!\\n\\x1b[1mToday: maintenance\\n on stdout before "
        "ppft_worker started (a shell startup file such as ~/.bashrc that prints?); it was skipped"
    ) in caplog.text


def test_an_unknown_host_quotes_ssh_and_keeps_jobs_waiting(make_client, caplog) -> None:  # type: ignore[no-untyped-def]
    client = make_client(0, ppservers=("ssh://nosuchhost.invalid",), ssh=("ssh", "-F", "none"))
    job = client.submit(double, (1,))
    wait_until(lambda: "Could not resolve hostname" in caplog.text, 60, "ssh's message in the log")
    head = "ssh node ssh://nosuchhost.invalid cannot be used: ssh cannot resolve the host name"
    assert f'{head} nosuchhost.invalid: "ssh: Could not resolve hostname nosuchhost.invalid' in caplog.text
    assert not job.done()  # a name may resolve later: not a refusal


def test_a_remote_side_that_fails_to_start_is_named(sshd: Sshd, make_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    python = fake_python(tmp_path, "raise ImportError('a dependency of ppft_worker is missing here')\n")
    client = make_client(0, ppservers=(sshd.entry(python=python),), ssh=sshd.prefix())
    message = refusal(client)
    assert f"ppft_worker could not start on 127.0.0.1 ({python} exited with status 1: " in message
    assert "ImportError: a dependency of ppft_worker is missing here" in message


def silent_listener() -> socket.socket:
    """A TCP port that accepts connections and never says a word: ssh waits there for sshd's banner."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock


def test_ssh_that_cannot_log_in_in_time_is_given_up(make_client, caplog, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from ppft_client.ssh import channel

    monkeypatch.setattr(channel, "GREETING_TIMEOUT", 1.0)
    with silent_listener() as listener:
        port = listener.getsockname()[1]
        client = make_client(0, ppservers=(f"ssh://127.0.0.1:{port}",), ssh=("ssh", "-F", "none"))
        wait_until(lambda: "within 1 s" in caplog.text, 30, "the node given up")
        name = f"ssh://127.0.0.1:{port}"
        assert (
            f"ssh node {name} cannot be used: ssh did not log in and start ppft_worker within 1 s"
            in caplog.text
        )
        started = time.monotonic()
        client.destroy()
        assert time.monotonic() - started < 5


def test_destroy_while_ssh_is_still_logging_in_leaves_no_ssh(make_client) -> None:  # type: ignore[no-untyped-def]
    with silent_listener() as listener:
        port = listener.getsockname()[1]
        client = make_client(0, ppservers=(f"ssh://127.0.0.1:{port}",), ssh=("ssh", "-F", "none"))
        node = ssh_node(client)
        wait_until(lambda: node.ssh_pid is not None, 30, "ssh to start")
        ssh_pid = node.ssh_pid
        assert ssh_pid is not None
        started = time.monotonic()
        client.destroy()
        assert time.monotonic() - started < 5
        assert not pid_alive(ssh_pid)


def ssh_node(client: ppft.Server):  # type: ignore[no-untyped-def]
    wait_until(lambda: bool(client._scheduler.nodes), 30, "the node to be added")
    (node,) = client._scheduler.nodes
    return node


def test_old_limit_flags_are_named_too_old(sshd: Sshd, make_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A ppft-worker whose --stdio predates `?worker_memory_limit=` and `?max_jobs_per_worker=` (its parser,
    played here, refuses the flags the client puts on the command line for them)."""
    python = fake_python(
        tmp_path,
        "import argparse\nparser = argparse.ArgumentParser(prog='ppft-worker --stdio')\n"
        "parser.add_argument('--stdio', action='store_true', required=True)\n"
        "parser.add_argument('-w', '--workers')\nparser.add_argument('-d', '--debug', action='store_true')\n"
        "parser.parse_args(['--stdio', '-w', '1', '--max-jobs-per-worker', '3'])\n",
    )
    entry = sshd.entry(python=python, max_jobs_per_worker=3)
    client = make_client(0, ppservers=(entry,), ssh=sshd.prefix())
    message = refusal(client)
    assert f"ppft-worker on 127.0.0.1 ({python}) is too old for limits on an ssh node's workers" in message
    assert "unrecognized arguments: --max-jobs-per-worker 3" in message
    assert "or leave those options out of the entry" in message
