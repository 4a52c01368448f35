"""Reading `ssh://` entries, the ssh command line they give, and what a failed channel is explained as."""

from __future__ import annotations

import shlex

import pytest

import ppft_client
from ppft_client.ssh.entries import (
    SshTarget,
    check_ssh_prefix,
    parse_ssh_entry,
    remote_command,
    split_ssh_entries,
    ssh_command,
)
from ppft_client.ssh.failures import explain, quote


def test_an_entry_with_user_port_and_options() -> None:
    target = parse_ssh_entry("ssh://alice@node1.example.org:2222?python=/opt/venv/bin/python&workers=8")
    assert target == SshTarget(
        "ssh://alice@node1.example.org:2222",
        "node1.example.org",
        "alice",
        2222,
        "/opt/venv/bin/python",
        8,
        False,
        "ssh://alice@node1.example.org:2222?python=/opt/venv/bin/python&workers=8",
    )


def test_a_bare_host_takes_the_defaults() -> None:
    target = parse_ssh_entry("ssh://node1")
    assert (target.name, target.user, target.port, target.python, target.workers, target.seal) == (
        "ssh://node1", None, None, "python3", None, False,
    )  # fmt: skip
    assert target.destination == "node1"


def test_ipv6_and_seal() -> None:
    target = parse_ssh_entry("ssh://bob@[::1]:22?seal=yes")
    assert (target.host, target.name, target.seal) == ("::1", "ssh://bob@[::1]:22", True)
    assert parse_ssh_entry("SSH://h?seal=off").seal is False


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("ssh://", "the host is missing"),
        (
            "ssh://h?threads=2",
            "unknown option 'threads' (the options are python, workers, seal, worker_memory_limit, "
            "max_jobs_per_worker)",
        ),
        (
            "ssh://h?worker_memory_limit=2gigs",
            "worker_memory_limit must be a size such as '2GiB', '1.5GB' or '512MiB' (units B, KB, MB, GB, "
            "TB and KiB, MiB, GiB, TiB), not '2gigs'",
        ),
        (
            "ssh://h?worker_memory_limit=100",
            "worker_memory_limit must be at least 1 MiB (a worker needs more than that to run), not '100'",
        ),
        ("ssh://h?max_jobs_per_worker=0", "max_jobs_per_worker='0' is not a whole number >= 1 (jobs per"),
        ("ssh://h?max_jobs_per_worker=-3", "max_jobs_per_worker='-3' is not a whole number >= 1"),
        ("ssh://h?max_jobs_per_worker=2.5", "max_jobs_per_worker='2.5' is not a whole number >= 1"),
        ("ssh://h?max_jobs_per_worker=", "option 'max_jobs_per_worker' needs a value"),
        ("ssh://h?workers=0", "workers='0' is not a number of worker processes >= 1"),
        ("ssh://h?workers=x", "workers='x' is not a number of worker processes >= 1"),
        ("ssh://h?workers=2&workers=3", "option 'workers' is given twice"),
        ("ssh://h?python=", "option 'python' needs a value"),
        ("ssh://h?seal=maybe", "seal='maybe' is not yes or no"),
        ("ssh://h?junk", "the options 'junk' are not 'name=value' pairs joined by '&'"),
        ("ssh://u:pw@h", "no password goes in an ssh address (ssh uses your keys and agent)"),
        ("ssh://h:99999", "Port out of range 0-65535"),
        ("ssh://h:0", "port 0 is not a port sshd listens on"),
        ("ssh://h/path", "unexpected '/path' after the host"),
        ("ssh://-oProxyCommand=x", "a host or user name cannot start with '-'"),
        ("ssh://-x@h", "a host or user name cannot start with '-'"),
        ("ssh://h o", "an ssh address holds no spaces or control characters"),
    ],
)
def test_an_unreadable_entry_says_what_is_wrong(entry: str, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_ssh_entry(entry)
    assert str(info.value).startswith(f"ssh node {entry!r}: {problem}")
    assert "write 'ssh://[user@]host[:port]' with options as a query" in str(info.value)


def test_limits_on_the_workers_of_an_ssh_node() -> None:
    target = parse_ssh_entry("ssh://h?workers=4&worker_memory_limit=2GiB&max_jobs_per_worker=1000")
    assert (target.memory_limit, target.max_jobs_per_worker) == (2 << 30, 1000)
    assert parse_ssh_entry("ssh://h?worker_memory_limit=1.5%20GB").memory_limit == 1_500_000_000
    bare = parse_ssh_entry("ssh://h")
    assert (bare.memory_limit, bare.max_jobs_per_worker) == (None, None)
    assert shlex.split(remote_command(target)) == [
        "exec", "python3", "-m", "ppft_worker", "--stdio", "-w", "4", "--worker-memory-limit", str(2 << 30),
        "--max-jobs-per-worker", "1000",
    ]  # fmt: skip
    assert remote_command(bare) == "exec python3 -m ppft_worker --stdio"


def test_split_keeps_the_other_entries_in_order() -> None:
    rest, found = split_ssh_entries(("a:1", "ssh://n1", "dask://d:1", " ssh://n2 ", "*"))
    assert rest == ("a:1", "dask://d:1", "*")
    assert [t.name for t in found] == ["ssh://n1", "ssh://n2"]


def test_the_ssh_command_line() -> None:
    target = parse_ssh_entry("ssh://alice@node1:2222?python=/opt/my%20venv/python&workers=4")
    argv = ssh_command(("ssh", "-i", "~/.ssh/cluster"), target)
    assert argv[:3] == ["ssh", "-i", "~/.ssh/cluster"]
    assert argv[3:-2] == [
        "-T", "-x", "-e", "none", "-o", "BatchMode=yes", "-o", "ClearAllForwardings=yes", "-p", "2222", "--",
    ]  # fmt: skip
    assert argv[-2] == "alice@node1"
    assert shlex.split(argv[-1]) == ["exec", "/opt/my venv/python", "-m", "ppft_worker", "--stdio", "-w", "4"]


def test_no_secret_and_no_injection_on_the_remote_command() -> None:
    target = parse_ssh_entry("ssh://h?python=python3;rm%20-rf%20~")
    assert shlex.split(remote_command(target)) == ["exec", "python3;rm -rf ~", "-m", "ppft_worker", "--stdio"]
    assert parse_ssh_entry("ssh://h?python=/opt/py+3/python").python == "/opt/py+3/python"  # not a space
    home = parse_ssh_entry("ssh://h?python=~/venv/bin/python")
    assert remote_command(home) == "exec ~/venv/bin/python -m ppft_worker --stdio"  # the remote home


def test_the_ssh_prefix_is_checked() -> None:
    assert check_ssh_prefix(("ssh",)) == ("ssh",)
    assert check_ssh_prefix(["ssh", "-F", "cfg"]) == ("ssh", "-F", "cfg")
    assert check_ssh_prefix("ssh -i '/my keys/k'") == ("ssh", "-i", "/my keys/k")
    with pytest.raises(TypeError, match="ssh must be the ssh command as a tuple of strings"):
        check_ssh_prefix(("ssh", 22))
    with pytest.raises(ValueError, match="ssh must name the ssh program first"):
        check_ssh_prefix(())


def test_server_refuses_a_missing_ssh_program_at_once() -> None:
    with pytest.raises(FileNotFoundError, match="the ssh program 'no-such-ssh' is not found here"):
        ppft_client.Server(0, ppservers=("ssh://node1",), ssh=("no-such-ssh",))


def test_connect1_takes_no_port_for_an_ssh_node() -> None:
    with ppft_client.Server(0) as server:
        with pytest.raises(ValueError, match="an ssh node's port goes in its address, ssh://host:PORT"):
            server.connect1("ssh://node1", 22)
        with pytest.raises(TypeError, match=r"connect1\('node1'\) needs the ppserver's port"):
            server.connect1("node1")


# -- explanations ----------------------------------------------------------------------------------------

NODE = parse_ssh_entry("ssh://alice@node1:2222?python=/opt/venv/bin/python")


def test_quote_keeps_the_last_meaningful_lines_escaped() -> None:
    assert quote(["@@@@@@@@", "  ", "a\x1b[31m", "b"]) == '"a\\x1b[31m / b"'
    assert quote([]) == ""


DENIED = "alice@node1: Permission denied (publickey)."
CHANGED = "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @"
UNKNOWN = "No ED25519 host key is known for [node1]:2222 and you have requested strict checking."
NO_NAME = "ssh: Could not resolve hostname node1: Name or service not known"
REFUSED = "ssh: connect to host node1 port 2222: Connection refused"
NO_MODULE = "/opt/venv/bin/python: No module named ppft_worker"
NO_PYTHON = "bash: line 1: /opt/venv/bin/python: No such file or directory"
TOO_OLD = "ppft-worker: error: unrecognized arguments: --stdio (ppft-worker -h lists the options)"
NO_LIMITS = "ppft-worker --stdio: error: unrecognized arguments: --max-jobs-per-worker 3"
KEX = "kex_exchange_identification: Connection closed by remote host"
BAD_OPTION = "command-line: line 0: Bad configuration option: foo"
CRASH = ["Traceback (most recent call last):", '  File "<frozen runpy>", line 198', "ImportError: no dill"]
VERIFY = "Host key verification failed."
CASES = [
    ([DENIED], 255, f'ssh could not log in to alice@node1: "{DENIED}"', True),
    (
        ["@@@@@@@", CHANGED, VERIFY],
        255,
        "the host key of node1 has changed, and ssh refused to connect",
        True,
    ),
    ([UNKNOWN, VERIFY], 255, "ssh could not verify the host key of node1", True),
    ([NO_NAME], 255, f'ssh cannot resolve the host name node1: "{NO_NAME}"', False),
    ([REFUSED], 255, "ssh cannot connect to node1", False),
    ([NO_MODULE], 1, "ppft_worker is not installed for /opt/venv/bin/python on node1", True),
    ([NO_PYTHON], 127, "/opt/venv/bin/python cannot be run on node1", True),
    ([TOO_OLD], 2, "ppft-worker on node1 (/opt/venv/bin/python) is too old for ssh nodes", True),
    (
        ["usage: ppft-worker --stdio [-h] --stdio [-w N] [-d]", NO_LIMITS],
        2,
        "ppft-worker on node1 (/opt/venv/bin/python) is too old for limits on an ssh node's workers",
        True,
    ),
    ([KEX], 255, f'ssh failed (ssh exited with status 255): "{KEX}"', False),
    (
        ["unknown option -- Z", "usage: ssh [-46AaCfGg]"],
        255,
        'ssh refused its command line: "unknown option',
        True,
    ),
    ([BAD_OPTION], 255, f'ssh refused its command line: "{BAD_OPTION}"', True),
    (CRASH, 1, "ppft_worker could not start on node1 (/opt/venv/bin/python exited with status 1: ", True),
]


@pytest.mark.parametrize(("lines", "returncode", "starts", "permanent"), CASES)
def test_each_failure_names_its_cause(
    lines: list[str], returncode: int, starts: str, permanent: bool
) -> None:
    reason, is_permanent = explain(NODE, "ssh closed the channel early", returncode, lines, ready=False)
    assert reason.startswith(starts), reason
    assert is_permanent is permanent


def test_the_fixes_are_spelt_out() -> None:
    missing, _ = explain(NODE, "", 1, ["/opt/venv/bin/python: No module named ppft_worker"], ready=False)
    assert "install it there: /opt/venv/bin/python -m pip install ppft-worker==" in missing
    assert "ssh://alice@node1:2222?python=/path/to/python" in missing
    changed, _ = explain(NODE, "", 255, ["WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!"], ready=False)
    assert "ssh-keygen -R '[node1]:2222'" in changed
    unknown, _ = explain(NODE, "", 255, ["Host key verification failed."], ready=False)
    assert "connect once by hand (ssh -p 2222 alice@node1)" in unknown


def test_a_version_mismatch_names_both_versions() -> None:
    stream = (
        "protocol mismatch: no common protocol version: this client speaks ppft-protocol 1-2, the peer "
        "speaks 3-3 (ppft-worker 3.0.0 --stdio on node1, python 3.13.1); upgrade the older side"
    )
    reason, permanent = explain(NODE, stream, 0, [], ready=True)
    assert permanent
    assert "ppft-worker 3.0.0" in reason
    assert f"this client is ppft-client {ppft_client.__version__}" in reason


def test_a_lost_channel_says_how_ssh_ended() -> None:
    closed = "the peer closed the connection without saying why"
    assert explain(NODE, closed, -9, [], ready=True) == (f"{closed}; ssh was killed by SIGKILL", False)
    silent = "the peer went silent for 10 s (no heartbeat)"
    reason, _ = explain(NODE, silent, None, ["Broken pipe"], ready=True)
    assert reason == f'{silent}; ssh did not exit, and was killed; it said "Broken pipe"'
