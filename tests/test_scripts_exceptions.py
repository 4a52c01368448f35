"""A job's exception reaches the caller as itself, from a user's script: run as a file, with -c and from
stdin, on local workers and on a real ppserver (tests/scripts/exception_kinds.py: one line per case)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from clusterlib import Cluster
from scriptlib import HOWS, run_script

RUNS = [(mode, how) for mode in ("local", "remote") for how in HOWS]


@pytest.fixture(scope="module")
def ppserver_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cluster = Cluster(tmp_path_factory.mktemp("exceptions"))
    try:
        yield cluster.ppserver(workers=2).address
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def outputs(ppserver_address: str) -> dict[tuple[str, str], dict[str, str]]:
    """What exception_kinds.py printed in each run, as {case: the rest of its line}; each run once."""
    found: dict[tuple[str, str], dict[str, str]] = {}
    for mode, how in RUNS:
        env = {"PPSERVER": ppserver_address} if mode == "remote" else {}
        ran = run_script("exception_kinds.py", how=how, env=env).check()
        lines = dict(line.split(": ", 1) for line in ran.stdout.splitlines() if ": " in line)
        found[(mode, how)] = lines
    return found


@pytest.fixture(params=RUNS, ids=[f"{mode}-{how}" for mode, how in RUNS])
def printed(request: pytest.FixtureRequest, outputs: dict[tuple[str, str], dict[str, str]]) -> dict[str, str]:
    return outputs[request.param]


def test_an_exception_whose_init_takes_other_arguments_arrives_as_the_callers_class(printed):
    assert printed["own-init"] == "True ('bob is over the quota of 3',) bob 3"


def test_except_with_the_callers_class_catches_it(printed):
    assert printed["except-clause"] == "eve"


def test_an_oserror_subclass_keeps_its_errno_and_filename(printed):
    assert printed["oserror-subclass"] == "True True True /etc/shadow [Errno 13] not yours: '/etc/shadow'"


def test_the_cause_arrives_as_itself(printed):
    assert printed["cause"] == "True KeyError('bob') True RemoteTraceback"


def test_the_implicit_context_arrives_as_itself(printed):
    assert printed["context"] == (
        "ValueError('while handling a KeyError') True KeyError('missing') RemoteTraceback"
    )


def test_a_suppressed_context_stays_suppressed(printed):
    assert printed["from-none"] == "ValueError('context suppressed') True RemoteTraceback"


def test_notes_survive(printed):
    assert printed["notes"] == "True ['checked at login', 'user bob']"


def test_an_exception_group_keeps_its_members_as_themselves(printed):
    assert printed["group"] == (
        "True batch failed (3 sub-exceptions) ['QuotaError', 'KeyError', 'ValueError'] True ann 2"
    )


def test_an_attribute_that_does_not_pickle_arrives_as_its_repr(printed):
    assert printed["unpicklable-attribute"] == "True ('cannot pickle a lock',) True"


def test_json_decode_error_keeps_its_position(printed):
    assert printed["json"] == "True Expecting value 6 1 7"


def test_called_process_error_keeps_its_fields(printed):
    assert printed["called-process"] == "True 2 ['make', 'all'] out err"


def test_file_not_found_keeps_errno_and_filename(printed):
    assert printed["file-not-found"] == "True True /nonexistent/ppft/file"


def test_unicode_decode_error_keeps_its_five_fields(printed):
    assert printed["unicode"] == "True utf-8 b'ok \\xff' 3 4 invalid start byte"


def test_a_class_the_caller_lacks_arrives_as_remote_job_error_naming_it(printed):
    assert printed["missing-class"] == (
        "True made_on_the_worker.WorkerOnlyError made_on_the_worker.WorkerOnlyError: its class exists only "
        "on the worker True"
    )


def test_the_remote_traceback_is_the_cause_of_an_unchained_exception(printed):
    assert printed["remote-traceback"] == "RemoteTraceback True"


@pytest.mark.parametrize("mode", ["local", "remote"])
def test_an_uncaught_one_prints_the_remote_traceback_then_the_callers(mode, ppserver_address):
    env = {"PPSERVER": ppserver_address} if mode == "remote" else {}
    ran = run_script("exception_uncaught.py", env=env)
    assert ran.returncode == 1
    err = ran.stderr
    remote = err.index("in over_quota\n    raise QuotaError(user, 3)")
    local = err.index('exception_uncaught.py", line')
    assert remote < local < err.rindex("QuotaError: bob is over the quota of 3")
    assert err.rstrip().splitlines()[-1] == "QuotaError: bob is over the quota of 3"
