"""`python -m ppft` (a worker), `python -m ppft.server` (ppserver), `python -m ppft.tests` (the examples)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.parametrize("package", ["ppft", "pp"])
def test_python_m_package_is_the_worker(package: str) -> None:
    done = run("-m", package, "--help")
    assert done.returncode == 0 and "ppft_worker" in done.stdout


@pytest.mark.parametrize("module", ["ppft.server", "pp.server"])
def test_python_m_server_is_ppserver(module: str) -> None:
    done = run("-m", module, "--help")
    assert done.returncode == 0 and "usage: ppserver" in done.stdout and "--workers" in done.stdout


def test_python_m_server_rejects_a_bad_flag_with_status_2() -> None:
    done = run("-m", "ppft.server", "--no-such-flag")
    assert done.returncode == 2 and "ppserver: error" in done.stderr


def test_python_m_ppft_tests_runs_every_example_and_passes() -> None:
    done = run("-m", "ppft.tests", timeout=110)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all 7 examples passed" in done.stdout
    for name in ("sum_primes", "sum_primes_functor", "callback", "dynamic_ncpus", "auto_diff", "quicksort",
                 "reverse_md5"):  # fmt: skip
        assert f"ok   {name} " in done.stdout


def test_python_m_ppft_tests_exits_1_when_examples_fail() -> None:
    done = run("-m", "ppft.tests", "not-a-number")  # the examples that read an ncpus argument fail
    assert done.returncode == 1
    assert "FAIL sum_primes " in done.stdout and "examples failed" in done.stdout
