"""ppserver's pid file (-P) is created, never opened through a symbolic link or over a file that is not its
own, in a folder nobody else may write to unless it is sticky (as /tmp is); a stale pid file of ours is
replaced, a live one is not. Real files in temporary folders, and real ppserver processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ppft_server.pidfile import PidFileError, remove_pid_file, write_pid_file

OTHER_UID = 4242
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user takes root")


def folder(tmp_path: Path, mode: int = 0o755) -> Path:
    path = tmp_path / "run"
    path.mkdir()
    path.chmod(mode)
    return path


def test_the_pid_file_is_created_with_our_pid_and_removed(tmp_path: Path) -> None:
    pid_file = folder(tmp_path) / "pp.pid"
    write_pid_file(str(pid_file))
    assert pid_file.read_text() == f"{os.getpid()}\n"
    assert remove_pid_file(str(pid_file)) is None
    assert not pid_file.exists()


def test_a_symlink_at_the_path_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    pid_file = folder(tmp_path) / "pp.pid"
    pid_file.symlink_to(victim)
    with pytest.raises(PidFileError, match=f"the pid file {pid_file} is a symbolic link.*`rm {pid_file}`"):
        write_pid_file(str(pid_file))
    assert victim.read_text() == "precious\n"


def test_a_dangling_symlink_is_not_created_through(tmp_path: Path) -> None:
    target = tmp_path / "created-through-the-link"
    pid_file = folder(tmp_path) / "pp.pid"
    pid_file.symlink_to(target)
    with pytest.raises(PidFileError, match="symbolic link"):
        write_pid_file(str(pid_file))
    assert not target.exists()


def test_a_hard_link_to_another_file_is_refused_and_not_truncated(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    pid_file = folder(tmp_path) / "pp.pid"
    os.link(victim, pid_file)
    with pytest.raises(PidFileError, match="a file with other hard links"):
        write_pid_file(str(pid_file))
    assert victim.read_text() == "precious\n"


def test_a_stale_pid_file_of_ours_is_replaced(tmp_path: Path) -> None:
    pid_file = folder(tmp_path) / "pp.pid"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(30)
    pid_file.write_text(f"{dead.pid}\n")
    write_pid_file(str(pid_file))
    assert pid_file.read_text() == f"{os.getpid()}\n"


def test_the_pid_file_of_a_running_process_is_left_alone(tmp_path: Path) -> None:
    pid_file = folder(tmp_path) / "pp.pid"
    alive = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        pid_file.write_text(f"{alive.pid}\n")
        with pytest.raises(PidFileError, match=f"names process {alive.pid}, which is running"):
            write_pid_file(str(pid_file))
        assert pid_file.read_text() == f"{alive.pid}\n"
    finally:
        alive.kill()
        alive.wait(30)


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757])
def test_a_folder_others_may_write_is_refused(tmp_path: Path, mode: int) -> None:
    run = folder(tmp_path, mode)
    with pytest.raises(PidFileError, match=rf"the folder {run} is writable .*`chmod go-w {run}`"):
        write_pid_file(str(run / "pp.pid"))
    assert os.listdir(run) == []


def test_a_sticky_folder_like_tmp_is_accepted(tmp_path: Path) -> None:
    run = folder(tmp_path, 0o1777)
    write_pid_file(str(run / "pp.pid"))
    assert (run / "pp.pid").read_text() == f"{os.getpid()}\n"


@needs_root
def test_in_a_sticky_folder_a_pid_file_of_another_user_is_refused(tmp_path: Path) -> None:
    run = folder(tmp_path, 0o1777)
    planted = run / "pp.pid"
    planted.write_text("1\n")
    os.chown(planted, OTHER_UID, -1)
    with pytest.raises(PidFileError, match=f"belongs to uid {OTHER_UID}.*`rm {planted}`"):
        write_pid_file(str(planted))
    assert planted.read_text() == "1\n"


def test_removal_leaves_a_pid_file_that_names_another_process(tmp_path: Path) -> None:
    pid_file = folder(tmp_path) / "pp.pid"
    pid_file.write_text("1\n")
    assert remove_pid_file(str(pid_file)) is None
    assert pid_file.exists()


# -- the real ppserver ---------------------------------------------------------------------------------------


def _ppserver(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ppft_server", "-p", "0", "-i", "127.0.0.1", "-w", "1", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HOME": str(home), "PPFT_SECRET": "pid file test"},
        cwd=home,
        timeout=60,
        check=False,
    )


def test_ppserver_refuses_a_pid_file_in_a_world_writable_folder(tmp_path: Path) -> None:
    run = folder(tmp_path, 0o777)
    result = _ppserver("-P", str(run / "pp.pid"), home=tmp_path)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line == (
        f"ppserver: error: the pid file {run / 'pp.pid'} is not written: the folder {run} is writable by its "
        f"group and others (mode 0777), who can replace what it holds: run `chmod go-w {run}`, or choose "
        f"another path with -P"
    )


def test_ppserver_refuses_a_symlinked_pid_file(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    pid_file = folder(tmp_path) / "pp.pid"
    pid_file.symlink_to(victim)
    result = _ppserver("-P", str(pid_file), home=tmp_path)
    assert result.returncode == 1 and "is a symbolic link" in result.stderr
    assert victim.read_text() == "precious\n"


def test_ppserver_writes_its_pid_file_in_a_sticky_folder_and_removes_it(
    tmp_path: Path, start_ppserver: Callable[..., object], wait_until: Callable[..., None]
) -> None:
    run = folder(tmp_path, 0o1777)
    pid_file = run / "pp.pid"
    server = start_ppserver("-p", "0", "-w", "1", "-P", str(pid_file), "-t", "0.5")
    wait_until(lambda: pid_file.exists(), 15, "the pid file")
    assert pid_file.read_text() == f"{server.pid}\n"  # type: ignore[attr-defined]
    assert server.wait() == 0  # type: ignore[attr-defined]
    assert not pid_file.exists()
