"""Secret files are checked as OpenSSH checks keys: no symbolic link (never followed), owned by this user or
root, and in folders that nobody else owns or may write to (sticky folders such as /tmp excepted). Real
files in temporary folders; the owner checks chown to another uid, which needs root (as in CI)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ppft_worker.runtime.safefiles import folder_problem
from ppft_worker.runtime.secret import SecretFileError, read_secret_file, resolve_secret

OTHER_UID = 4242  # no such user on the test machines: shown as "uid 4242"

needs_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="giving a file to another user takes root"
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("PPFT_SECRET", raising=False)
    return home


def secret_at(path: Path, text: str = "s3cret", mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


# -- symbolic links ------------------------------------------------------------------------------------------


def test_a_symlinked_secret_file_is_refused_naming_the_target_and_the_fix(home: Path) -> None:
    real = secret_at(home / "real-secret")
    link = home / "secret-link"
    link.symlink_to(real)
    with pytest.raises(SecretFileError) as info:
        read_secret_file(str(link))
    message = str(info.value)
    assert f"secret file {link} is a symbolic link (to {real})" in message
    assert f"`rm {link} && cp {real} {link} && chmod 600 {link}`" in message
    assert "s3cret" not in message


def test_a_symlink_at_the_per_user_path_is_refused_and_nothing_is_written_through_it(home: Path) -> None:
    target = home / "elsewhere"
    (home / ".ppft").mkdir(mode=0o700)
    (home / ".ppft" / "secret").symlink_to(target)  # dangling: creating "the secret" would write `target`
    with pytest.raises(SecretFileError, match="is a symbolic link"):
        resolve_secret()
    assert not target.exists()


def test_a_fifo_at_the_path_is_refused_at_once_not_waited_on(home: Path) -> None:
    fifo = home / "fifo"
    os.mkfifo(fifo, 0o600)
    outcome: list[BaseException] = []
    reader = threading.Thread(
        target=lambda: _catch(outcome, lambda: read_secret_file(str(fifo))), daemon=True
    )
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "reading a FIFO as the secret file hung"
    assert isinstance(outcome[0], SecretFileError) and "not a regular file" in str(outcome[0])


def _catch(into: list[BaseException], call) -> None:  # type: ignore[no-untyped-def]
    try:
        call()
    except BaseException as exc:  # noqa: BLE001 - handed to the test
        into.append(exc)


# -- owners --------------------------------------------------------------------------------------------------


@needs_root
def test_a_secret_file_owned_by_another_user_is_refused(home: Path) -> None:
    path = secret_at(home / "theirs")
    os.chown(path, OTHER_UID, -1)
    with pytest.raises(SecretFileError) as info:
        read_secret_file(str(path))
    message = str(info.value)
    assert f"{path} belongs to uid {OTHER_UID}, neither you (root) nor root" in message
    assert f"`sudo chown root {path}`" in message


@needs_root
def test_a_folder_owned_by_another_user_is_refused(home: Path) -> None:
    folder = home / "their-folder"
    path = secret_at(folder / "secret")
    os.chown(folder, OTHER_UID, -1)
    with pytest.raises(SecretFileError) as info:
        read_secret_file(str(path))
    assert f"the folder {folder} belongs to uid {OTHER_UID}" in str(info.value)
    assert f"`sudo chown root {folder}`" in str(info.value)


def test_a_file_of_this_user_in_folders_of_this_user_is_accepted(home: Path) -> None:
    assert read_secret_file(str(secret_at(home / "a" / "b" / "secret", "fine"))) == b"fine"


# -- folder permissions --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode, who", [(0o777, "its group and others"), (0o775, "its group"), (0o757, "other users")]
)
def test_a_secret_file_in_a_folder_others_may_write_is_refused_with_the_chmod(
    home: Path, mode: int, who: str
) -> None:
    folder = home / "shared"
    path = secret_at(folder / "secret")
    folder.chmod(mode)
    with pytest.raises(SecretFileError) as info:
        read_secret_file(str(path))
    message = str(info.value)
    assert f"the folder {folder} is writable by {who} (mode {mode:04o})" in message
    assert f"`chmod go-w {folder}`" in message


def test_a_folder_above_that_others_may_write_is_refused_too(home: Path) -> None:
    top = home / "top"
    path = secret_at(top / "private" / "secret")
    (top / "private").chmod(0o700)
    top.chmod(0o777)
    with pytest.raises(SecretFileError, match=f"the folder {top} is writable"):
        read_secret_file(str(path))


def test_a_sticky_world_writable_folder_is_accepted(home: Path) -> None:
    folder = home / "tmp-like"
    path = secret_at(folder / "secret", "sticky")
    folder.chmod(0o1777)
    assert read_secret_file(str(path)) == b"sticky"


def test_the_per_user_folder_is_checked_before_a_secret_is_created_in_it(home: Path) -> None:
    (home / ".ppft").mkdir(mode=0o700)
    (home / ".ppft").chmod(0o777)
    with pytest.raises(SecretFileError, match=r"is not created: the folder .*\.ppft is writable"):
        resolve_secret()
    assert os.listdir(home / ".ppft") == []


def test_a_home_that_others_may_write_refuses_the_per_user_secret(home: Path) -> None:
    secret_at(home / ".ppft" / "secret")
    home.chmod(0o777)
    try:
        with pytest.raises(SecretFileError, match=f"`chmod go-w {home}`"):
            resolve_secret()
    finally:
        home.chmod(0o700)


def test_folder_problem_follows_links_in_the_folders_to_the_real_ones(home: Path) -> None:
    real = home / "real"
    real.mkdir(mode=0o700)
    (home / "alias").symlink_to(real)
    assert folder_problem(str(home / "alias")) is None
    real.chmod(0o777)
    assert f"the folder {real} is writable" in (folder_problem(str(home / "alias")) or "")


def test_nothing_is_ever_loosened_or_fixed(home: Path) -> None:
    folder = home / "shared"
    path = secret_at(folder / "secret", mode=0o644)
    folder.chmod(0o777)
    with pytest.raises(SecretFileError):
        read_secret_file(str(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 and stat.S_IMODE(folder.stat().st_mode) == 0o777


# -- as users meet it: ppserver refuses to start ------------------------------------------------------------


def test_ppserver_with_a_symlinked_secret_file_exits_with_the_reason(home: Path) -> None:
    real = secret_at(home / "cluster.secret")
    link = home / "cluster.link"
    link.symlink_to(real)
    result = subprocess.run(
        [sys.executable, "-m", "ppft_server", "-p", "0", "-i", "127.0.0.1", "--secret-file", str(link)],
        capture_output=True,
        text=True,
        env={**os.environ, "HOME": str(home)},
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"ppserver: error: secret file {link} is a symbolic link (to {real})")
