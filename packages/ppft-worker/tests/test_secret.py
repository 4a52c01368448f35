"""Where the secret comes from: argument, secret file, PPFT_SECRET, ~/.ppft/secret (DESIGN.md section 4)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ppft_protocol import PPFTError
from ppft_worker.runtime.secret import SecretFileError, default_secret_path, read_secret_file, resolve_secret


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh $HOME and no PPFT_SECRET, so the per-user file is the test's own."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("PPFT_SECRET", raising=False)
    return home


def private_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_default_path_follows_home(home: Path) -> None:
    assert default_secret_path() == str(home / ".ppft" / "secret")


def test_explicit_secret_wins_over_everything(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PPFT_SECRET", "from-env")
    given = private_file(home / "given", "from-file")
    private_file(home / ".ppft" / "secret", "from-home")
    assert resolve_secret("explicit", secret_file=str(given)) == b"explicit"


def test_explicit_bytes_are_used_as_they_are(home: Path) -> None:
    assert resolve_secret(b"\x00\xffraw") == b"\x00\xffraw"


def test_explicit_text_is_utf8(home: Path) -> None:
    assert resolve_secret("clé") == "clé".encode()


def test_secret_file_argument_beats_the_environment(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PPFT_SECRET", "from-env")
    given = private_file(home / "given", "from-file\n")
    assert resolve_secret(secret_file=str(given)) == b"from-file"


def test_environment_beats_the_per_user_file(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PPFT_SECRET", "from-env")
    private_file(home / ".ppft" / "secret", "from-home")
    assert resolve_secret() == b"from-env"


def test_empty_secret_and_empty_environment_count_as_unset(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PPFT_SECRET", "")
    private_file(home / ".ppft" / "secret", "from-home")
    assert resolve_secret("") == b"from-home"
    assert resolve_secret(b"") == b"from-home"


def test_per_user_file_is_created_private_on_first_use(home: Path) -> None:
    secret = resolve_secret()
    path = home / ".ppft" / "secret"
    assert len(secret) == 64
    assert bytes.fromhex(secret.decode()) != bytes(32)
    assert mode_of(path) == 0o600
    assert mode_of(path.parent) == 0o700
    assert path.read_bytes().strip() == secret
    assert resolve_secret() == secret  # the second use reads the same file
    assert sorted(os.listdir(path.parent)) == ["secret"]  # no temporary file left behind


def test_each_home_gets_its_own_random_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PPFT_SECRET", raising=False)
    secrets = set()
    for name in ("a", "b"):
        monkeypatch.setenv("HOME", str(tmp_path / name))
        secrets.add(resolve_secret())
    assert len(secrets) == 2


def test_created_file_is_private_whatever_the_umask(home: Path) -> None:
    old = os.umask(0)
    try:
        resolve_secret()
    finally:
        os.umask(old)
    assert mode_of(home / ".ppft" / "secret") == 0o600
    assert mode_of(home / ".ppft") == 0o700


def test_a_passphrase_in_the_file_is_used_stripped(home: Path) -> None:
    private_file(home / ".ppft" / "secret", "  my pass phrase \n")
    assert resolve_secret() == b"my pass phrase"


def test_group_readable_file_is_refused_with_the_chmod_to_run(home: Path) -> None:
    path = private_file(home / ".ppft" / "secret", "s3cret", mode=0o640)
    with pytest.raises(SecretFileError, match=r"accessible to other users \(mode 0640\)") as info:
        resolve_secret()
    assert f"chmod 600 {path}" in str(info.value)
    assert "s3cret" not in str(info.value)
    assert isinstance(info.value, PPFTError)
    assert mode_of(path) == 0o640  # refused, never "fixed" behind the user's back


def test_world_readable_explicit_secret_file_is_refused(home: Path) -> None:
    path = private_file(home / "given", "s3cret", mode=0o604)
    with pytest.raises(SecretFileError, match=f"chmod 600 {path}"):
        resolve_secret(secret_file=str(path))


def test_group_writable_file_is_refused(home: Path) -> None:
    path = private_file(home / "given", "s3cret", mode=0o620)
    with pytest.raises(SecretFileError, match="accessible to other users"):
        read_secret_file(str(path))


def test_missing_explicit_secret_file_is_an_error_not_created(home: Path) -> None:
    path = home / "nowhere" / "secret"
    with pytest.raises(SecretFileError, match="does not exist"):
        resolve_secret(secret_file=str(path))
    assert not path.exists()


def test_empty_secret_file_is_refused(home: Path) -> None:
    private_file(home / ".ppft" / "secret", "\n")
    with pytest.raises(SecretFileError, match="is empty"):
        resolve_secret()


def test_directory_is_not_a_secret_file(home: Path) -> None:
    (home / "dir").mkdir(mode=0o700)
    with pytest.raises(SecretFileError, match="not a regular file"):
        resolve_secret(secret_file=str(home / "dir"))


def test_unusable_home_gives_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("HOME", str(blocker / "home"))  # a path under a regular file cannot be created
    monkeypatch.delenv("PPFT_SECRET", raising=False)
    with pytest.raises(SecretFileError, match=r"file/home/\.ppft/secret: .* pass the secret explicitly"):
        resolve_secret()


def test_failure_to_create_the_file_is_a_clear_error(home: Path) -> None:
    (home / ".ppft").symlink_to(home / "missing")  # a dangling link: the directory cannot be made
    with pytest.raises(SecretFileError, match=r"cannot create the secret file .* pass the secret explicitly"):
        resolve_secret()


def test_processes_racing_on_first_use_agree_on_one_secret(home: Path) -> None:
    code = "from ppft_worker.runtime.secret import resolve_secret; print(resolve_secret().decode())"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(4)
    ]
    outputs = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=30)
            assert proc.returncode == 0
            outputs.append(out.strip())
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
    assert len(set(outputs)) == 1
    assert outputs[0].encode() == (home / ".ppft" / "secret").read_bytes().strip()
