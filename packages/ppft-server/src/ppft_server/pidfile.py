"""ppserver's pid file (`-P`): written without ever following a link or overwriting a file that is not ours.

A ppserver often runs as a service account, sometimes as root, and writes its pid file into a shared folder
such as /tmp. Opening that path the usual way (`O_CREAT | O_TRUNC`) would follow a symbolic link another user
planted there, or truncate a file hard-linked to it, so the file is created with `O_EXCL | O_NOFOLLOW`: it
is a new file of ours, or nothing. A file already at the path is replaced only when it is ours, a plain file
with one link, and names no running process (a stale pid file of an earlier ppserver that was killed).
The folder must be owned by this user or root and writable by nobody else unless it is sticky, as /tmp is
(`ppft_worker.runtime.safefiles`). Every refusal is a `PidFileError` saying what was wrong and what to run.

Removing the pid file removes it only if it still holds this process's id. This module must never follow
a symbolic link, truncate a file it did not create, or remove a file that names another running process.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

from ppft_protocol import PPFTError
from ppft_worker.runtime import folder_problem, owner_name

__all__ = ["PidFileError", "remove_pid_file", "write_pid_file"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class PidFileError(PPFTError):
    """The pid file cannot be written safely; the message says why and what to do."""


def write_pid_file(path: str) -> None:
    """Create the pid file at `path` holding this process's id (see the module's docstring)."""
    folder = os.path.dirname(path) or "."
    problem = folder_problem(folder, ancestors=False) if os.path.isdir(folder) else None
    if problem is not None:
        raise PidFileError(f"the pid file {path} is not written: {problem}, or choose another path with -P")
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o644)
        except FileExistsError:
            _remove_stale(path)  # raises unless the file there was a stale pid file of ours
            continue
        except OSError as exc:
            raise PidFileError(
                f"cannot write the pid file {path}: {exc.strerror or exc}; check the path given to -P"
            ) from None
        try:
            os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        finally:
            os.close(fd)
        return
    raise PidFileError(f"the pid file {path} keeps reappearing: another process writes it; choose another -P")


def _remove_stale(path: str) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return  # gone meanwhile: try again
    if stat.S_ISLNK(info.st_mode):
        raise PidFileError(
            f"the pid file {path} is a symbolic link, which ppserver does not follow: remove it "
            f"(`rm {path}`) or choose another path with -P"
        )
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        what = "a file with other hard links" if stat.S_ISREG(info.st_mode) else "not a regular file"
        raise PidFileError(
            f"the pid file {path} exists and is {what}, so ppserver will not write its pid there: remove it "
            f"(`rm {path}`) or choose another path with -P"
        )
    if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
        raise PidFileError(
            f"the pid file {path} exists and belongs to {owner_name(info.st_uid)}: if no ppserver uses it, "
            f"remove it (`rm {path}`), or choose another path with -P"
        )
    pid = _read_pid(path)
    if pid is not None and pid != os.getpid() and _running(pid):
        raise PidFileError(
            f"the pid file {path} names process {pid}, which is running: another ppserver uses this pid "
            f"file; stop it, or choose another path with -P"
        )
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a stale pid file of ours (its process is gone)


def _read_pid(path: str) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        text = os.read(fd, 64).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    return int(text) if text.isdigit() else None


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError as exc:
        return exc.errno == errno.EPERM  # alive, but another user's
    return True


def remove_pid_file(path: str) -> str | None:
    """Remove the pid file if it still holds this process's id; what went wrong, or None."""
    try:
        if _read_pid(path) == os.getpid() and stat.S_ISREG(os.lstat(path).st_mode):
            os.unlink(path)
    except OSError as exc:
        return f"could not remove the pid file {path}: {exc.strerror or exc}"
    return None
