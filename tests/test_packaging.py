"""The five packages as a packager publishes them: one version, a LICENSE in each file, one owner per command.

`scripts/release` builds the ten sdists and wheels and checks their metadata (scripts/_release.py); these
tests run it, show that its checks fail on what they guard against, and install the wheels in a fresh venv
as a user would (pip, from the built files; the dependencies from the package index).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

import _release  # noqa: E402

RELEASE = REPO / "scripts" / "release"


def _copy_checkout(tmp: Path) -> Path:
    """The files `source_problems` reads, copied to `tmp` (a checkout to break without touching ours)."""
    root = tmp / "checkout"
    root.mkdir()
    shutil.copy(REPO / "pyproject.toml", root)
    shutil.copy(REPO / "LICENSE", root)
    for package in _release.packages(REPO):
        target = root / package.directory.relative_to(REPO)
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            (target).mkdir(parents=True, exist_ok=True)
            shutil.copy(package.directory / name, target / name)
        version = target / package.version_file.relative_to(package.directory)
        version.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(package.version_file, version)
    return root


def test_the_checkout_is_consistent() -> None:
    assert _release.source_problems(REPO) == []
    assert _release.supported_pythons(REPO) == ["3.10", "3.11", "3.12", "3.13"]


def test_a_pin_or_version_that_disagrees_is_named(tmp_path: Path) -> None:
    root = _copy_checkout(tmp_path)
    assert _release.source_problems(root) == []
    client = root / "packages" / "ppft-client" / "pyproject.toml"
    client.write_text(client.read_text().replace('"ppft-worker==2', '"ppft-worker==1', 1))
    server_version = root / "packages" / "ppft-server" / "src" / "ppft_server" / "version.py"
    server_version.write_text(server_version.read_text().replace('__version__ = "', '__version__ = "9', 1))
    problems = "\n".join(_release.source_problems(root))
    assert "packages/ppft-client/pyproject.toml: 'ppft-worker==1" in problems
    assert "the packages have different versions" in problems and "ppft-server 9" in problems


def test_set_version_writes_every_version_and_pin(tmp_path: Path) -> None:
    root = _copy_checkout(tmp_path)
    changed = _release.set_version("7.8.9", root)
    assert len(changed) == 9  # five version.py, four pyproject.toml (ppft-protocol pins no sibling)
    assert {p.version for p in _release.packages(root)} == {"7.8.9"}
    assert _release.source_problems(root) == []
    assert '"ppft-client[dask]==7.8.9"' in (root / "packages" / "ppft" / "pyproject.toml").read_text()


def test_a_command_declared_by_two_packages_is_named(tmp_path: Path) -> None:
    root = _copy_checkout(tmp_path)
    ppft = root / "packages" / "ppft" / "pyproject.toml"
    ppft.write_text(ppft.read_text() + '\n[project.scripts]\nppserver = "ppft_server.cli:main"\n')
    problems = "\n".join(_release.source_problems(root))
    assert "console script 'ppserver' is declared by ppft-server and ppft" in problems


def test_license_copies_must_equal_the_root_license(tmp_path: Path) -> None:
    root = _copy_checkout(tmp_path)
    (root / "packages" / "ppft-worker" / "LICENSE").write_text("MIT\n")
    assert any("packages/ppft-worker/LICENSE" in p for p in _release.source_problems(root))


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, str(RELEASE), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"scripts/release failed:\n{done.stdout}{done.stderr}"
    assert "10 files in" in done.stdout
    return out


def test_release_builds_ten_files_each_with_the_license(dist: Path) -> None:
    files = sorted(p.name for p in dist.iterdir())
    assert len(files) == 10, files
    license_text = (REPO / "LICENSE").read_text()
    for wheel in dist.glob("*.whl"):
        with zipfile.ZipFile(wheel) as z:
            names = [n for n in z.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
            assert len(names) == 1, (wheel.name, z.namelist())
            assert z.read(names[0]).decode() == license_text
            metadata = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
            assert "License-File: LICENSE" in metadata and "License-Expression: BSD-3-Clause" in metadata
    assert _release.dist_problems(dist, REPO) == []


def test_release_check_names_a_wheel_without_its_license(dist: Path, tmp_path: Path) -> None:
    broken = tmp_path / "dist"
    shutil.copytree(dist, broken)
    wheel = next(broken.glob("ppft_worker-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        items = [(info, z.read(info)) for info in z.infolist() if not info.filename.endswith("/LICENSE")]
    with zipfile.ZipFile(wheel, "w") as z:
        for info, data in items:
            z.writestr(info, data)
    problems = _release.dist_problems(broken, REPO)
    assert problems == [f"{wheel.name}: no LICENSE file inside"]
    done = subprocess.run(
        [sys.executable, str(RELEASE), "--check-only", "--out", str(broken)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1 and "no LICENSE file inside" in done.stderr


def _pip(venv: Path, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "--disable-pip-version-check",
         *args],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"pip {' '.join(args)} failed:\n{done.stdout}{done.stderr}"


def test_uninstalling_ppft_keeps_the_commands_of_ppft_server_and_ppft_worker(
    dist: Path, tmp_path: Path
) -> None:
    """A ppft-server user who also had ppft and removes it keeps `ppserver`: one package owns each command."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    version = _release.packages(REPO)[0].version

    def wheel(name: str) -> str:
        return str(dist / f"{name}-{version}-py3-none-any.whl")

    _pip(venv, "install", "-q", wheel("ppft_protocol"), wheel("ppft_worker"), wheel("ppft_server"))
    _pip(venv, "install", "-q", "--no-index", "--find-links", str(dist), wheel("ppft_client"), wheel("ppft"))
    _pip(venv, "uninstall", "-y", "-q", "ppft")
    for command in ("ppserver", "ppft-worker"):
        done = subprocess.run(
            [str(venv / "bin" / command), "-h"], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, f"{command} -h after `pip uninstall ppft`:\n{done.stdout}{done.stderr}"
        assert "usage" in done.stdout.lower(), done.stdout
    gone = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import ppft"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert gone.returncode != 0 and "No module named 'ppft'" in gone.stderr
