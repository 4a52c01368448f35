"""Jobs that raise every kind of exception a user meets, caught as the user would catch them.

Each case prints one line: what `except` caught and what it carries. The classes below live in this file, so
in the caller they are `__main__`'s; they travel as depfuncs (as source from a file, by dill from -c or
stdin) and must come back as these very classes.
"""

import errno
import json
import os
import subprocess
import sys
import threading

import ppft as pp

PPSERVER = os.environ.get("PPSERVER")  # "host:port": every job on that ppserver; unset: local workers
job_server = pp.Server(0, ppservers=(PPSERVER,)) if PPSERVER else pp.Server(2)


class QuotaError(Exception):
    def __init__(self, user, limit):
        super().__init__(f"{user} is over the quota of {limit}")
        self.user = user
        self.limit = limit


class Denied(PermissionError):
    def __init__(self, *, path):
        super().__init__(errno.EACCES, "not yours", path)


class HoldsALock(Exception):
    def __init__(self, why):
        super().__init__(why)
        self.lock = threading.Lock()


def over_quota(user):
    raise QuotaError(user, 3)


def denied(path):
    raise Denied(path=path)


def chained(user):
    try:
        {}[user]
    except KeyError as exc:
        raise QuotaError(user, 3) from exc


def during_handling():
    try:
        {}["missing"]
    except KeyError:
        raise ValueError("while handling a KeyError")  # noqa: B904 - the implicit context is the case


def from_none():
    try:
        {}["missing"]
    except KeyError:
        raise ValueError("context suppressed") from None


def with_notes(user):
    exc = QuotaError(user, 3)
    exc.add_note("checked at login")
    exc.add_note(f"user {user}")
    raise exc


def group():
    raise ExceptionGroup("batch failed", [QuotaError("ann", 1), KeyError("k"), ValueError("v")])  # noqa: F821


def holds_a_lock():
    raise HoldsALock("cannot pickle a lock")


def bad_json():
    import json

    return json.loads('{"a": }')


def failed_command():
    import subprocess

    raise subprocess.CalledProcessError(2, ["make", "all"], output="out", stderr="err")


def missing_file():
    with open("/nonexistent/ppft/file"):
        pass


def bad_bytes():
    return b"ok \xff".decode("utf-8")


def only_on_the_worker():
    import sys
    import types

    module = types.ModuleType("made_on_the_worker")
    exec("class WorkerOnlyError(Exception):\n    pass\n", module.__dict__)
    sys.modules["made_on_the_worker"] = module
    raise module.WorkerOnlyError("its class exists only on the worker")


def caught(func, args=(), depfuncs=(), modules=()):
    try:
        job_server.submit(func, args, depfuncs, modules)()
    except BaseException as exc:  # what arrives is the case
        return exc
    raise AssertionError(f"{func.__name__} did not raise")


def own_init():
    exc = caught(over_quota, ("bob",), (QuotaError,))
    return type(exc) is QuotaError, exc.args, exc.user, exc.limit


def except_clause():
    try:
        job_server.submit(over_quota, ("eve",), (QuotaError,))()
    except QuotaError as exc:
        return (exc.user,)


def oserror_subclass():
    exc = caught(denied, ("/etc/shadow",), (Denied,), ("errno",))
    subclass = type(exc) is Denied, isinstance(exc, PermissionError)
    return *subclass, exc.errno == errno.EACCES, exc.filename, str(exc)


def cause():
    exc = caught(chained, ("bob",), (QuotaError,))
    below = type(exc.__cause__.__cause__).__name__
    return type(exc) is QuotaError, repr(exc.__cause__), exc.__suppress_context__, below


def context():
    exc = caught(during_handling)
    return repr(exc), exc.__cause__ is None, repr(exc.__context__), type(exc.__context__.__cause__).__name__


def from_none_case():
    exc = caught(from_none)
    return repr(exc), exc.__suppress_context__, type(exc.__cause__).__name__


def notes():
    exc = caught(with_notes, ("bob",), (QuotaError,))
    return type(exc) is QuotaError, exc.__notes__


def group_case():
    exc = caught(group, (), (QuotaError,))
    quota, rest = exc.split(QuotaError)
    members = [type(e).__name__ for e in exc.exceptions]
    first = quota.exceptions[0]
    is_group = type(exc) is ExceptionGroup  # noqa: F821 - Python 3.11 and later
    return is_group, str(exc), members, type(first) is QuotaError, first.user, len(rest.exceptions)


def unpicklable_attribute():
    exc = caught(holds_a_lock, (), (HoldsALock,), ("threading",))
    return type(exc) is HoldsALock, exc.args, exc.lock.startswith("<unlocked _thread.lock")


def json_case():
    exc = caught(bad_json)
    return type(exc) is json.JSONDecodeError, exc.msg, exc.pos, exc.lineno, exc.colno


def called_process():
    exc = caught(failed_command)
    return type(exc) is subprocess.CalledProcessError, exc.returncode, exc.cmd, exc.output, exc.stderr


def file_not_found():
    exc = caught(missing_file)
    return type(exc) is FileNotFoundError, exc.errno == errno.ENOENT, exc.filename


def unicode():
    exc = caught(bad_bytes)
    return type(exc) is UnicodeDecodeError, exc.encoding, exc.object, exc.start, exc.end, exc.reason


def missing_class():
    exc = caught(only_on_the_worker)
    in_traceback = "WorkerOnlyError: its class exists only on the worker" in exc.__cause__.tb
    return type(exc) is pp.RemoteJobError, exc.remote_type, str(exc), in_traceback


def remote_traceback():
    exc = caught(over_quota, ("bob",), (QuotaError,))
    return type(exc.__cause__).__name__, "in over_quota" in exc.__cause__.tb


CASES = {
    "own-init": own_init,
    "except-clause": except_clause,
    "oserror-subclass": oserror_subclass,
    "cause": cause,
    "context": context,
    "from-none": from_none_case,
    "notes": notes,
    "group": group_case,
    "unpicklable-attribute": unpicklable_attribute,
    "json": json_case,
    "called-process": called_process,
    "file-not-found": file_not_found,
    "unicode": unicode,
    "missing-class": missing_class,
    "remote-traceback": remote_traceback,
}
for name, case in CASES.items():
    try:
        print(f"{name}:", *case())
    except BaseException as exc:  # a failing case says how; the others still run
        print(f"{name}: failed: {exc!r}")

job_server.destroy()
sys.stdout.flush()
