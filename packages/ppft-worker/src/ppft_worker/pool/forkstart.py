"""Starting a local worker by `os.fork`, when that is safe: the parent's side and the child's preparation.

An exec'd worker (`spawn.exec_worker`) pays an interpreter start and its imports before its first result; a
fork of the already-initialised client pays neither, and is what `ProcessPoolExecutor` does (`scripts/bench
--only startup` races it; with `PPFT_START=exec` it times the exec'd start).
Fork is only safe when no other thread can hold a lock the child will need (the import lock, a logging
handler's, malloc's, a library's), so a pool forks only the workers it starts with, and only when the process
has exactly the threads its owner vouches for (`why_not_fork`, counted by `threading` and by the kernel): the
client's scheduler asks for one, the thread calling `Server()`, when it is the main thread. Everything else
(replacements, growth, `restart=True`, other threads, PPFT_START=exec, no `os.fork`) is exec'd, or, in a pool
that replaces workers, forked by its fork server (`forkserver`), a clean process of its own.

    parent: flush stdout/stderr, block signals, fork, restore the signal mask -> ForkedProcess(pid)
    child:  freeze the inherited heap, reset signal handlers, the channel on fds 0/1 and every other inherited
            descriptor replaced by a dead one, fresh stdio, `__main__`, argv and logging handlers
            -> `process.run_forked` (the same loop as `process.main`) -> os._exit

The forked child must never run the parent's code again: it leaves through `os._exit` whatever happens (no
return into the parent's stack, no atexit handler), and it never flushes, closes or frees an object it
inherited (an unflushed buffer of the parent's would be written twice, maybe into a descriptor number the
child reused): it keeps them referenced and freezes the garbage collector's view of the inherited heap.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import gc
import io
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
import types
from typing import NoReturn, Protocol

from ppft_protocol.cpython import SIG_BLOCK, SIG_SETMASK, preload_libc_access, pthread_sigmask, valid_signals

__all__ = ["START_ENV", "ForkedProcess", "WorkerProcess", "fork_worker", "prepare_fork", "why_not_fork"]

log = logging.getLogger("ppft.pool")

START_ENV = "PPFT_START"
"""PPFT_START=exec makes every local worker start by exec (never by fork)."""

FORK_MAX_RSS = 256 << 20
"""A process with more resident memory than this execs its workers: a fork copies its page tables, for each
worker, a cost that grows with the memory and passes an interpreter start's past a few hundred MiB; and
every page it writes while a forked worker lives is copied again."""

EXIT_CHILD_FAILED = 70
"""The forked child failed before its worker loop ran (its traceback is on its stderr)."""

_kept: list[object] = []  # in a forked child: what it inherited and replaced, never to be freed or flushed
_own_streams: list[io.TextIOWrapper] = []  # in a forked child: the stdio it made, flushed before it exits


class WorkerProcess(Protocol):
    """What the pool uses of a worker process: `subprocess.Popen` or `ForkedProcess`."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def send_signal(self, sig: int) -> None: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...


class ForkedProcess:
    """The parent's handle on a forked worker: the part of `subprocess.Popen` that the pool uses, with the
    same meaning (`returncode` negative for a signal, `wait(timeout)` raising `subprocess.TimeoutExpired`)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def __repr__(self) -> str:
        return f"<ForkedProcess pid {self.pid} returncode {self.returncode}>"

    def _try_wait(self, flags: int) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, flags)
            except ChildProcessError:
                # Reaped by someone else (SIGCHLD ignored, or a waitpid(-1) elsewhere): the status is lost,
                # as `subprocess.Popen` reports it.
                self.returncode = 0
            else:
                if pid == self.pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def poll(self) -> int | None:
        return self._try_wait(os.WNOHANG)

    def wait(self, timeout: float | None = None) -> int:
        if timeout is None:
            code = self._try_wait(0)
            assert code is not None
            return code
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while (code := self._try_wait(os.WNOHANG)) is None:  # as Popen.wait(timeout) does: no SIGCHLD here
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise subprocess.TimeoutExpired(f"forked ppft worker {self.pid}", timeout)
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.05)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # never signal a pid that was reaped (and may be reused)
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


# -- the parent --------------------------------------------------------------------------------------------


def _resident_bytes() -> int | None:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _thread_counts() -> tuple[int, int | None]:
    """(Python threads, OS threads or None where unknown): the OS count sees threads started in C (a BLAS
    pool, a library's watchdog) that `threading` does not know about."""
    try:
        tasks: int | None = len(os.listdir("/proc/self/task"))
    except OSError:
        tasks = None
    return threading.active_count(), tasks


def why_not_fork(fork_threads: int | None) -> str:
    """Why a worker must be exec'd now, or "" when forking it is safe: the process has exactly
    `fork_threads` threads, counted by `threading` and by the kernel (so threads started in C count too),
    nobody said otherwise, and it is small enough (`FORK_MAX_RSS`) for a fork to be the faster start. Where
    the kernel's count cannot be read (no /proc), workers are exec'd."""
    if fork_threads is None:
        return "the pool's owner did not offer a fork start (fork_threads=None)"
    wanted = os.environ.get(START_ENV, "").strip().lower()
    if wanted == "exec":
        return f"{START_ENV}=exec"
    if wanted not in ("", "auto"):
        log.warning(
            "%s=%r is not understood (exec or auto): starting workers as auto does", START_ENV, wanted
        )
    if not hasattr(os, "fork"):
        return "this platform has no os.fork"
    python_threads, os_threads = _thread_counts()
    if os_threads is None:
        return "/proc/self/task cannot be read, so threads started in C cannot be counted"
    if python_threads != fork_threads or os_threads != fork_threads:
        return (
            f"the process has {python_threads} Python thread(s) and {os_threads} OS thread(s), not exactly "
            f"{fork_threads}: another thread may hold a lock the child needs"
        )
    resident = _resident_bytes()
    if resident is None or resident > FORK_MAX_RSS:
        size = "unknown" if resident is None else f"{resident >> 20} MiB"
        return f"the process's resident memory ({size}) is over {FORK_MAX_RSS >> 20} MiB: exec starts faster"
    return ""


def prepare_fork() -> None:
    """Import, in the parent, what a forked worker needs on its way to its first result, so no child
    imports it: the worker loop, the job runner and its output capture, and the C half of ctypes (prctl,
    mallopt). Called when a pool is about to fork, never at import time (`import ppft` stays as fast as it
    was)."""
    from ..process import JobRunner, OutputCapture, run_forked  # noqa: F401, PLC0415

    preload_libc_access()


def fork_worker(
    child_in: int,
    child_out: int,
    secret: bytes,
    pythonpath: str,
    output_region: object = None,
    segments: bool = False,
) -> ForkedProcess:
    """Fork a worker that serves the pool over `child_in` (jobs) and `child_out` (results), the pipe ends
    that are the child's; the caller closes them in the parent afterwards. `pythonpath`: the PYTHONPATH the
    child sets for the processes it starts, as an exec'd worker has it (`spawn.worker_pythonpath`).
    `output_region`: the pool's mapping of the worker's output region (`outregion`), which the child
    inherits. `segments`: the pool maps the worker's shared segments (`ppft_worker.mapped`). Raises OSError
    if fork fails."""
    for stream in (sys.stdout, sys.stderr):  # what the user printed must not be in the child's buffers too
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):  # closed or broken: the child gets fresh ones
                stream.flush()
    parent = os.getpid()
    # No signal is handled in the child before its handlers are reset (a user's SIGTERM handler would run
    # the user's code there); the child restores this thread's mask, which an exec'd worker inherits.
    # (`ppft_protocol.cpython`'s C functions: `signal`'s wrappers make an enum of each of 64 signals at
    # every call, on the way of every forked worker.)
    old_mask = pthread_sigmask(SIG_BLOCK, valid_signals())
    try:
        pid = os.fork()
        if pid == 0:
            _child_main(child_in, child_out, secret, parent, old_mask, pythonpath, output_region, segments)
    finally:
        pthread_sigmask(SIG_SETMASK, old_mask)  # the parent only: the child never gets here
    return ForkedProcess(pid)


# -- the child ---------------------------------------------------------------------------------------------


def _child_main(
    child_in: int,
    child_out: int,
    secret: bytes,
    parent: int,
    mask: set[int],
    pythonpath: str,
    region: object,
    segments: bool,
) -> NoReturn:
    code = EXIT_CHILD_FAILED
    try:
        try:
            code = _child(child_in, child_out, secret, parent, mask, pythonpath, region, segments)
        except BaseException:  # noqa: BLE001 - reported on fd 2 and in the exit code; nothing may escape
            with contextlib.suppress(BaseException):
                os.write(
                    2, f"ppft-worker[{os.getpid()}]: forked worker failed:\n{traceback.format_exc()}".encode()
                )
        for stream in _own_streams:  # what Python's exit would flush; never what the parent left unflushed
            with contextlib.suppress(BaseException):
                stream.flush()
    finally:
        os._exit(code)


def _child(
    child_in: int,
    child_out: int,
    secret: bytes,
    parent: int,
    mask: set[int],
    pythonpath: str,
    region: object,
    segments: bool,
) -> int:
    gc.freeze()  # inherited garbage (a cycle holding an open file, say) is never collected, so never flushed
    # Descriptors first: from here on, an inherited object flushed or closed by accident reaches a dead pipe,
    # never a file of the parent's. Signals stay blocked until their handlers are reset.
    _channel_on_stdio(child_in, child_out)
    _reset_signals()
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    _reset_faulthandler()
    _fresh_stdio()
    _fresh_main(pythonpath)
    _drop_log_handlers()
    from ..process import run_forked  # noqa: PLC0415 - loaded already (prepare_fork)

    return run_forked(secret, parent, region, segments)


def _reset_signals() -> None:
    """The dispositions an exec'd worker starts with: a handler installed from Python (the user's) is
    reset to the default, SIGINT raises KeyboardInterrupt unless it was ignored, and SIGPIPE and SIGXFSZ are
    ignored as Python ignores them at start-up. Ignored signals stay ignored, as they would through exec."""
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            handler = signal.getsignal(sig)
        except (OSError, ValueError):
            continue  # not a signal this platform lets Python handle
        if callable(handler):
            _kept.append(handler)  # the user's: dropping it might free (and flush) what it holds
        if sig == signal.SIGINT:
            if handler != signal.SIG_IGN:
                signal.signal(sig, signal.default_int_handler)
        elif callable(handler):
            signal.signal(sig, signal.SIG_DFL)
    for name in ("SIGPIPE", "SIGXFSZ"):
        ignored = getattr(signal, name, None)
        if ignored is not None:
            signal.signal(ignored, signal.SIG_IGN)
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)  # the parent's (an asyncio loop's) is a dead pipe now


def _reset_faulthandler() -> None:
    """faulthandler as an exec'd worker has it (on stderr if PYTHONFAULTHANDLER is set), not on a descriptor
    of the parent's (pytest's copy of stderr, say), which is a dead pipe now."""
    faulthandler = sys.modules.get("faulthandler")
    if faulthandler is not None and faulthandler.is_enabled():
        faulthandler.disable()
        if os.environ.get("PYTHONFAULTHANDLER"):
            faulthandler.enable(2)


def _channel_on_stdio(child_in: int, child_out: int) -> None:
    """Leave the child as an exec'd worker starts: the channel on fds 0 and 1, fd 2 as inherited, and no other
    open file of the parent's (another worker's pipe end held here would keep that worker from seeing EOF;
    the user's sockets and the loop's wake-up pipe are not the child's either).

    Each inherited number is not closed but taken by a dead pipe end (its reader closed): a Python object
    inherited from the parent that still names it (a module's open file, say) fails loudly, writes with
    EPIPE and reads with EBADF, instead of writing into, or closing, a file the child opened since under the
    same number."""
    if child_in < 3:
        child_in = fcntl.fcntl(child_in, fcntl.F_DUPFD, 3)
    if child_out < 3:
        child_out = fcntl.fcntl(child_out, fcntl.F_DUPFD, 3)
    os.dup2(child_in, 0)
    os.dup2(child_out, 1)
    try:
        inherited = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc (why_not_fork never lets that happen): the numbers are freed instead
        os.closerange(3, max(os.sysconf("SC_OPEN_MAX"), 256))
        return
    dead_r, dead = os.pipe()
    os.close(dead_r)
    for fd in inherited:
        if fd > 2 and fd != dead:
            os.dup2(dead, fd, inheritable=False)


def _fresh_stdio() -> None:
    """New sys.stdin/stdout/stderr on fds 0/1/2, made as Python makes them; the inherited objects are kept
    (never flushed: their unflushed bytes belong to the parent, which writes them)."""
    _kept.extend((sys.stdin, sys.stdout, sys.stderr, sys.__stdin__, sys.__stdout__, sys.__stderr__))
    model = sys.__stdout__ or sys.stdout
    encoding = getattr(model, "encoding", None)
    errors = getattr(model, "errors", None)
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))

    def stream(fd: int, mode: str, errors: str | None, line_buffering: bool) -> io.TextIOWrapper | None:
        try:
            raw = io.FileIO(fd, mode, closefd=False)
        except OSError:
            return None  # a closed descriptor: Python's own start-up gives None as well
        buffered = io.BufferedReader(raw) if mode == "r" else io.BufferedWriter(raw)
        text = io.TextIOWrapper(
            buffered,
            encoding,
            errors,
            line_buffering=line_buffering,
            write_through=unbuffered and mode == "w",
        )
        text.mode = mode  # type: ignore[misc]  # as Python's own std streams
        if mode == "w":
            _own_streams.append(text)
        return text

    sys.stdin = sys.__stdin__ = stream(0, "r", errors, False)  # type: ignore[misc]
    sys.stdout = sys.__stdout__ = stream(1, "w", errors, False)  # type: ignore[misc]
    sys.stderr = sys.__stderr__ = stream(2, "w", "backslashreplace", True)  # type: ignore[misc]


def _fresh_main(pythonpath: str) -> None:
    """An empty `__main__` (as `python -c` has) so job code and pickles never see the user's script
    globals, argv as an exec'd worker's, PYTHONPATH as `spawn.worker_env` sets it, the thread named main."""
    _kept.append(sys.modules.get("__main__"))
    main = types.ModuleType("__main__")
    main.__dict__.update(__builtins__=builtins, __loader__=builtins.__loader__, __annotations__={})
    sys.modules["__main__"] = main
    sys.argv = ["-c"]
    os.environ["PYTHONPATH"] = pythonpath
    threading.current_thread().name = "MainThread"


def _drop_log_handlers() -> None:
    """Remove every handler the parent configured (kept, not closed: closing flushes into descriptors that
    are not the child's); NullHandlers stay, as a library adds them at import. The worker's own "ppft"
    handler is installed by `process`, and other records reach stderr through logging's last resort, as in
    an exec'd worker."""
    manager = logging.Logger.manager
    loggers = [
        logging.getLogger(),
        *(x for x in manager.loggerDict.values() if isinstance(x, logging.Logger)),
    ]
    for logger in loggers:
        dropped = [h for h in logger.handlers if not isinstance(h, logging.NullHandler)]
        if dropped:
            _kept.extend(dropped)
            logger.handlers = [h for h in logger.handlers if isinstance(h, logging.NullHandler)]
