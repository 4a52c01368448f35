"""The ssh example of docs/cluster.md ("The quickest way: ssh"), run against a real sshd.

The docs checker cannot reach a machine called node1, so the page marks the transcript `not run`; this test
runs the same code, with `node1` a host alias of the test sshd's own ssh config (the way a user's
~/.ssh/config names a machine) and the venv's python named in the entry (the test machine's `python3` has
no ppft-worker), and compares what it prints with what the page shows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from docslib import ROOT, output_matches, parse_page, transcript_commands
from sshlib import Sshd
from sshlib import sshd as sshd  # noqa: PLC0414 - the fixture

pytestmark = pytest.mark.timeout(120)
PAGE = ROOT / "docs" / "cluster.md"


def test_the_ssh_example_of_the_cluster_page_prints_what_the_page_shows(sshd: Sshd, tmp_path: Path) -> None:
    blocks = parse_page(PAGE)
    (script,) = [b for b in blocks if b.save_as == "ssh_nodes.py"]
    (transcript,) = [b for b in blocks if b.is_transcript and b.lines[0] == "$ python ssh_nodes.py"]
    assert transcript.not_run  # the checker leaves it to this test
    assert script.text.count("ssh://node1?") == 1
    code = script.text.replace("ssh://node1?", f"ssh://node1?python={sys.executable}&")
    (tmp_path / "ssh_nodes.py").write_text(code)
    ran = subprocess.run(
        [sys.executable, "ssh_nodes.py"], cwd=tmp_path, env=dict(os.environ, **sshd.env()),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=90, check=False,
    )  # fmt: skip
    (command,) = transcript_commands(transcript)
    assert output_matches(command.expected, ran.stdout.splitlines()), ran.stdout
    assert ran.returncode == 0
