"""The caller's half of a job's exception: what the worker's pickle becomes here, when classes are missing,
when nothing came but the type name, and when what came is broken (nothing of it may ever raise)."""

from __future__ import annotations

import pickle
import sys
import types

import pytest

from ppft_client import RemoteJobError, RemoteTraceback
from ppft_client.rebuild import rebuild_exception
from ppft_protocol import Result
from ppft_worker.process.picklers import pickle_exception


class QuotaError(Exception):
    def __init__(self, user: str, limit: int) -> None:
        super().__init__(f"{user} is over {limit}")
        self.user = user


def failed(exc: BaseException | None, *, data: bytes | None = None, tb: str = "TRACEBACK\n") -> Result:
    """The Result of a job that raised `exc` (pickled as a worker does), or carried `data` as its pickle."""
    if data is None:
        assert exc is not None
        data = pickle_exception(exc, pickle.HIGHEST_PROTOCOL)
    name = "x.Y" if exc is None else f"{type(exc).__module__}.{type(exc).__qualname__}"
    message = "m" if exc is None else str(exc)
    return Result(1, False, error_type=name, error_message=message, traceback=tb, exception=data)


@pytest.fixture
def module_only_on_the_worker():
    """A module that exists while the worker pickles, and is gone when the caller loads."""
    module = types.ModuleType("gone_module")
    source = "class GoneError(Exception):\n    def __init__(self, a, b):\n        super().__init__(a)\n"
    exec(source, vars(module))
    sys.modules["gone_module"] = module
    yield module
    sys.modules.pop("gone_module", None)


def test_a_missing_class_in_the_chain_costs_only_that_link(module_only_on_the_worker):
    try:
        try:
            raise module_only_on_the_worker.GoneError("deep", 2)
        except Exception as inner:
            raise QuotaError("bob", 3) from inner
    except QuotaError as exc:
        result = failed(exc)
    del sys.modules["gone_module"]
    rebuilt = rebuild_exception(result)
    assert (type(rebuilt), rebuilt.user) == (QuotaError, "bob")
    cause = rebuilt.__cause__
    assert type(cause) is RemoteJobError
    assert (cause.remote_type, str(cause)) == ("gone_module.GoneError", "gone_module.GoneError: deep")
    assert isinstance(cause.__cause__, RemoteTraceback)  # the root of the chain holds the remote traceback


def test_a_missing_class_in_a_group_becomes_a_remote_job_error_member(module_only_on_the_worker):
    group = ExceptionGroup("two", [module_only_on_the_worker.GoneError("a", 1), QuotaError("ann", 1)])  # noqa: F821
    group.add_note("kept")
    result = failed(group)
    del sys.modules["gone_module"]
    rebuilt = rebuild_exception(result)
    assert type(rebuilt) is ExceptionGroup  # noqa: F821
    assert [type(e) for e in rebuilt.exceptions] == [RemoteJobError, QuotaError]
    assert rebuilt.exceptions[0].remote_type == "gone_module.GoneError"
    assert rebuilt.__notes__ == ["kept"]


def test_a_missing_class_at_the_top_keeps_message_attributes_and_traceback(module_only_on_the_worker):
    exc = module_only_on_the_worker.GoneError("top", 1)
    exc.detail = 42
    result = failed(exc)
    del sys.modules["gone_module"]
    rebuilt = rebuild_exception(result)
    assert (type(rebuilt), str(rebuilt), rebuilt.detail) == (RemoteJobError, "gone_module.GoneError: top", 42)
    assert rebuilt.__cause__.tb == "TRACEBACK\n"


def test_without_a_pickle_a_class_the_caller_has_still_arrives_as_itself():
    rebuilt = rebuild_exception(failed(None, data=b"")._replace(error_type="json.decoder.JSONDecodeError"))
    import json

    assert type(rebuilt) is json.JSONDecodeError and rebuilt.args == ("m",)


def test_without_a_pickle_an_unknown_class_is_a_remote_job_error():
    rebuilt = rebuild_exception(failed(None, data=b""))
    assert (type(rebuilt), rebuilt.remote_type, str(rebuilt)) == (RemoteJobError, "x.Y", "x.Y: m")


@pytest.mark.parametrize("data", [b"garbage", b"\x80\x05K\x01.", pickle.dumps(ValueError)[:-3]])
def test_a_broken_pickle_never_raises(data):
    rebuilt = rebuild_exception(failed(None, data=data)._replace(error_type="builtins.KeyError"))
    assert type(rebuilt) is KeyError and isinstance(rebuilt.__cause__, RemoteTraceback)


def test_a_class_whose_unpickling_raises_system_exit_does_not_escape():
    class Exits(Exception):
        def __reduce__(self):
            return sys.exit, (3,)

    data = pickle.dumps(Exits())
    rebuilt = rebuild_exception(failed(None, data=data))
    assert type(rebuilt) is RemoteJobError


def test_a_pickle_from_a_version_1_worker_loads_as_before():
    data = pickle.dumps(KeyError("old"))  # ppft 2.0.0's workers sent the plain pickle
    rebuilt = rebuild_exception(failed(None, data=data))
    assert type(rebuilt) is KeyError and rebuilt.args == ("old",)


@pytest.mark.parametrize("name", ["JobSetupError", "UnpicklableResultError"])
def test_a_ppft_2_0_0_workers_job_errors_arrive_as_themselves(name):
    """ppft 2.0.0 defined its two job errors in ppft_worker.execute; they live in ppft_worker.errors now."""
    import ppft_worker

    cls = getattr(ppft_worker, name)
    old = f"ppft_worker.execute.{name}"
    data = pickle.dumps(cls("could not"), 2).replace(b"ppft_worker.errors\n", b"ppft_worker.execute\n")
    assert b"ppft_worker.execute\n" in data
    for result in (failed(None, data=data), failed(None, data=b"")):
        rebuilt = rebuild_exception(result._replace(error_type=old, error_message="could not"))
        assert type(rebuilt) is cls and rebuilt.args == ("could not",)
