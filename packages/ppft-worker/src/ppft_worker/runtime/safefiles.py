"""Checks that a file ppft trusts (a secret file, a pid file) cannot be read, replaced or redirected.

As OpenSSH does for keys (its StrictModes): the file must not be a symbolic link (it is opened with
`O_NOFOLLOW`, so a link planted at its path is refused, never followed), must be owned by this user (or
root), and every folder on its way must be owned by this user or root and writable by nobody else, unless
the folder is sticky, as /tmp is (there others may add files but cannot rename or remove ours). Each finding
is a sentence that says what is wrong and the exact command that fixes it.

This module only looks: it never changes a permission, an owner or a file.
"""

from __future__ import annotations

import os
import stat

__all__ = ["file_problem", "folder_problem", "owner_name"]

_WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH


def owner_name(uid: int) -> str:
    """The user name of `uid`, or "uid N" when it has none."""
    try:
        import pwd  # noqa: PLC0415 - a refusal's path only

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return f"uid {uid}"


def _trusted_owner(uid: int) -> bool:
    return uid in (os.geteuid(), 0)


def folder_problem(directory: str, *, ancestors: bool = True) -> str | None:
    """Why a file in `directory` could be replaced by someone else, with the command that fixes it; None when
    it cannot: the folder (and, with `ancestors`, every folder above it) is owned by this user or root and
    writable by nobody else, or sticky."""
    if os.name != "posix":
        return None
    current = os.path.realpath(directory or ".")
    me = owner_name(os.geteuid())
    while True:
        try:
            info = os.stat(current)
        except OSError as exc:
            return f"cannot check the folder {current}: {exc.strerror}"
        if not _trusted_owner(info.st_uid):
            return (
                f"the folder {current} belongs to {owner_name(info.st_uid)}, neither you ({me}) nor root, "
                f"who can replace what it holds: move the file to a folder of your own, or run "
                f"`sudo chown {me} {current}`"
            )
        writable = info.st_mode & _WRITABLE_BY_OTHERS
        if writable and not info.st_mode & stat.S_ISVTX:
            who = {stat.S_IWGRP: "its group", stat.S_IWOTH: "other users"}.get(
                writable, "its group and others"
            )
            return (
                f"the folder {current} is writable by {who} (mode {stat.S_IMODE(info.st_mode):04o}), who can "
                f"replace what it holds: run `chmod go-w {current}`"
            )
        if not ancestors:
            return None
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


def file_problem(path: str, info: os.stat_result, *, private: bool) -> str | None:
    """Why the file at `path` (whose `fstat` is `info`) must not be trusted, with the fix; None when it can:
    a regular file owned by this user or root, and with `private`, of no access for the group or others."""
    if not stat.S_ISREG(info.st_mode):
        return f"{path} is not a regular file: point to a file"
    if os.name != "posix":
        return None
    if not _trusted_owner(info.st_uid):
        me = owner_name(os.geteuid())
        return (
            f"{path} belongs to {owner_name(info.st_uid)}, neither you ({me}) nor root, who can read and "
            f"change it: use a file of your own, or run `sudo chown {me} {path}`"
        )
    if private and info.st_mode & 0o077:
        return (
            f"{path} is accessible to other users (mode {stat.S_IMODE(info.st_mode):04o}): run "
            f"`chmod 600 {path}`"
        )
    return None
