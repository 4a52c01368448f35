"""Where the shared secret comes from (DESIGN.md section 4), for the client, ppserver and dial-in workers.

In order: the explicit `secret` argument (`secret=`, `ppserver -s`); an explicit secret file
(`--secret-file`); the environment variable PPFT_SECRET; the per-user secret file `~/.ppft/secret`, created on
first use with 32 random bytes (hex text), mode 0600, in a directory of mode 0700, like Erlang's cookie. So
one user on one machine, or on machines sharing a home directory, needs no flag; anyone else needs the
secret. The secret is the text itself (surrounding whitespace of a file stripped), as bytes: a passphrase a
person wrote into the file works as well as the generated one. Dial-in workers prove a workers secret
instead when their ppserver has one (`resolve_workers_secret`: `-s`, `--secret-file`, PPFT_WORKERS_SECRET,
then `resolve_secret`'s order).

A secret file that other users can access is refused (`SecretFileError`, naming the chmod to run), never
silently used: whoever reads it can run code as its owner on every node that trusts it. So is, as OpenSSH does
for keys, a secret file that is a symbolic link (opened with `O_NOFOLLOW`: a link is never followed), that
belongs to another user, or that lies in a folder (or below a folder) that another user owns or may write to,
unless that folder is sticky as /tmp is (`ppft_worker.runtime.safefiles`). This module must never hold a
secret in its code, log a secret, or loosen a file's permissions.
"""

from __future__ import annotations

import errno
import logging
import os

from ..errors import SecretFileError
from .safefiles import file_problem, folder_problem

__all__ = [
    "SECRET_ENV",
    "WORKERS_SECRET_ENV",
    "SecretFileError",
    "default_secret_path",
    "read_secret_file",
    "resolve_secret",
    "resolve_workers_secret",
]

SECRET_ENV = "PPFT_SECRET"
"""The environment variable holding the secret (third in the order of resolution)."""

WORKERS_SECRET_ENV = "PPFT_WORKERS_SECRET"
"""The environment variable holding the workers secret: what a dial-in worker proves to a ppserver."""

log = logging.getLogger("ppft.secret")

_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOFOLLOW", 0)  # a symbolic link at the path is refused, never followed
    | getattr(os, "O_NONBLOCK", 0)  # a FIFO planted at the path must not hang us (no effect on a file)
)
_RISK = "whoever can read or replace it can run code as you on every ppft node"


def default_secret_path() -> str:
    """The per-user secret file: `~/.ppft/secret` (`~` from $HOME, so tests and shared homes are honoured)."""
    return os.path.join(os.path.expanduser("~"), ".ppft", "secret")


def resolve_secret(secret: str | bytes | None = None, *, secret_file: str | None = None) -> bytes:
    """The secret to authenticate with, from the first source that has one (see the module's docstring).

    An empty `secret` counts as none given, as an empty PPFT_SECRET does. Raises `SecretFileError` when
    the secret file to use is unreadable, empty, or accessible to other users."""
    if secret:
        return secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if secret_file is not None:
        return read_secret_file(secret_file)
    env = os.environ.get(SECRET_ENV, "")
    if env:
        return env.encode("utf-8")
    path = default_secret_path()
    data = _read(path)
    if data is None:
        _create_secret_file(path)
        return read_secret_file(path)
    return data


def resolve_workers_secret(
    secret: str | bytes | None = None, *, secret_file: str | None = None
) -> bytes | None:
    """The workers secret, which admits dial-in workers to a ppserver: the explicit `secret`, else
    `secret_file`, else PPFT_WORKERS_SECRET; None when none is given (a dial-in worker then proves the secret
    `resolve_secret` finds, for a ppserver whose client secret admits workers too)."""
    if secret:
        return secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if secret_file is not None:
        return read_secret_file(secret_file)
    env = os.environ.get(WORKERS_SECRET_ENV, "")
    if env:
        return env.encode("utf-8")
    return None


def read_secret_file(path: str) -> bytes:
    """The secret held in the file at `path`, refused unless only its owner may access it."""
    data = _read(path)
    if data is None:
        raise SecretFileError(
            f"secret file {path} does not exist: create it (mode 0600), or pass the secret explicitly "
            f"(secret=, -s, or the {SECRET_ENV} environment variable)"
        )
    return data


def _read(path: str) -> bytes | None:
    """The secret in the file at `path`, None when there is no such file."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP and os.path.islink(path):
            target = os.path.realpath(path)
            raise SecretFileError(
                f"secret file {path} is a symbolic link (to {target}), which ppft does not follow: whoever "
                f"can change the link can point it elsewhere; name the file itself, or put it in place of "
                f"the link: run `rm {path} && cp {target} {path} && chmod 600 {path}`"
            ) from None
        raise SecretFileError(
            f"cannot open secret file {path}: {exc.strerror}; check its owner and permissions, or pass the "
            f"secret explicitly (secret=, -s, or {SECRET_ENV})"
        ) from None
    try:
        info = os.fstat(fd)  # the file we opened, not whatever the path names a moment later
        problem = file_problem(path, info, private=True)
        if problem is not None:
            raise SecretFileError(
                f"secret file {problem} (and change the secret if others may have read it), then retry; "
                f"{_RISK}"
            )
        problem = folder_problem(os.path.dirname(path))
        if problem is not None:
            raise SecretFileError(f"secret file {path} is refused: {problem}, then retry; {_RISK}")
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError as exc:
        raise SecretFileError(f"cannot read secret file {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks).strip()
    if not data:
        hint = " (or delete it: ppft then creates a new one)" if path == default_secret_path() else ""
        raise SecretFileError(f"secret file {path} is empty: write a secret into it{hint}")
    return data


def _create_secret_file(path: str) -> None:
    """Create the per-user secret file with 32 random bytes, atomically: of two processes racing to create
    it, both end up reading the same secret (the file appears complete, by a hard link, or not at all)."""
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        problem = folder_problem(directory)  # never write a new secret where others could swap it
        if problem is not None:
            raise SecretFileError(f"the secret file {path} is not created: {problem}, then retry; {_RISK}")
        tmp = os.path.join(directory, f".secret.{os.getpid()}.{os.urandom(6).hex()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            try:
                os.write(fd, os.urandom(32).hex().encode("ascii") + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)
            except FileExistsError:
                return  # another process created it first: use theirs
            except OSError:
                _create_in_place(path)  # a file system without hard links
        finally:
            os.unlink(tmp)
    except OSError as exc:
        raise SecretFileError(
            f"cannot create the secret file {path}: {exc.strerror}; pass the secret explicitly (secret=, -s, "
            f"or {SECRET_ENV})"
        ) from None
    log.info("created the per-user secret file %s (mode 0600)", path)


def _create_in_place(path: str) -> None:
    """Create the file directly (O_EXCL): never overwrites a secret another process already uses."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    except FileExistsError:
        return
    try:
        os.write(fd, os.urandom(32).hex().encode("ascii") + b"\n")
    finally:
        os.close(fd)
