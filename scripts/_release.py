"""The release checks of scripts/release: the five packages agree, and their ten files are publishable.

Two levels, both returning a list of problems (empty: all is well), each naming the package, the file and
what to do:

- `source_problems(root)` reads the checkout only (no build, a few milliseconds; tests/test_packaging.py
  runs it): one version for all five packages (each package's `version.py` is its own source, since its
  sdist must build alone), every pin on a sibling package `==` that version, the same supported Pythons in
  every package (classifiers and `requires-python`), the LICENSE copies equal to the repository's, a README
  per package, each console script owned by one package only.
- `dist_problems(root, out)` reads the built sdists and wheels: names, versions, pins, `Requires-Python`,
  the license file present (and the right text), the package README as the long description, classifiers
  and project URLs, `py.typed`, the console scripts and the modules they point to.

`set_version` writes a new version into every version.py and pin. This module never uploads anything.
"""

from __future__ import annotations

import argparse
import email
import email.message
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: hatchling brings tomli
    import tomli as tomllib

__all__ = [
    "EXPECTED_SCRIPTS",
    "Package",
    "build",
    "dist_problems",
    "main",
    "packages",
    "set_version",
    "source_problems",
    "supported_pythons",
]

ROOT = Path(__file__).resolve().parent.parent

EXPECTED_SCRIPTS = {
    "ppft-server": {"ppserver"},
    "ppft-worker": {"ppft-worker"},
}
"""Console scripts and the one package that installs each (ppft itself installs none: see its pyproject)."""

LICENSE_EXPRESSION = "BSD-3-Clause"
_VERSION_LINE = re.compile(r'^__version__ = "([^"]+)"$', re.M)
_PYTHON_CLASSIFIER = re.compile(r"^Programming Language :: Python :: (3\.\d+)$")
_PIN = re.compile(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*(.*)$")


@dataclass
class Package:
    """One package of the workspace, as its pyproject.toml and version.py say."""

    directory: Path
    name: str
    version: str
    version_file: Path
    project: dict[str, object] = field(repr=False)

    @property
    def dist_name(self) -> str:
        """The name as in a wheel's or sdist's file name (`ppft_client`)."""
        return re.sub(r"[-_.]+", "_", self.name).lower()

    def requirements(self) -> list[str]:
        reqs = list(self.project.get("dependencies", []))  # type: ignore[call-overload]
        for extra in dict(self.project.get("optional-dependencies", {})).values():  # type: ignore[call-overload]
            reqs.extend(extra)
        return reqs

    def scripts(self) -> dict[str, str]:
        return dict(self.project.get("scripts", {}))  # type: ignore[call-overload]

    def classifiers(self) -> list[str]:
        return list(self.project.get("classifiers", []))  # type: ignore[call-overload]


def packages(root: Path = ROOT) -> list[Package]:
    """The workspace's packages, in the order of the root pyproject's `[tool.ppft-workspace] members`."""
    workspace = tomllib.loads((root / "pyproject.toml").read_text())
    found = []
    for member in workspace["tool"]["ppft-workspace"]["members"]:
        directory = root / member
        project = tomllib.loads((directory / "pyproject.toml").read_text())
        version_path = directory / project["tool"]["hatch"]["version"]["path"]
        match = _VERSION_LINE.search(version_path.read_text())
        version = match.group(1) if match else "?"
        name = project["project"]["name"]
        found.append(Package(directory, name, version, version_path, project["project"]))
    return found


def supported_pythons(root: Path = ROOT) -> list[str]:
    """The Python versions the packages say they support ("3.10", ...), from the ppft package's classifiers:
    the CI runs each of them (.ci/run), and `source_problems` checks that every package says the same."""
    ppft = next(p for p in packages(root) if p.name == "ppft")
    return _pythons_of(ppft.classifiers())


def _pythons_of(classifiers: list[str]) -> list[str]:
    found = [m.group(1) for m in map(_PYTHON_CLASSIFIER.match, classifiers) if m]
    return sorted(found, key=lambda v: tuple(map(int, v.split("."))))


# -- the checkout ------------------------------------------------------------------------------------------


def source_problems(root: Path = ROOT) -> list[str]:
    """What disagrees in the checkout (see the module's text); empty when the packages are consistent."""
    pkgs = packages(root)
    problems: list[str] = []
    names = {p.name for p in pkgs}
    versions = {p.version for p in pkgs}
    if len(versions) != 1:
        listed = ", ".join(f"{p.name} {p.version} ({p.version_file.relative_to(root)})" for p in pkgs)
        problems.append(
            f"the packages have different versions: {listed}; scripts/release --set-version X.Y.Z"
        )
    version = pkgs[0].version
    pythons = _pythons_of(pkgs[0].classifiers())
    license_text = (root / "LICENSE").read_text() if (root / "LICENSE").exists() else None
    if license_text is None:
        problems.append("no LICENSE at the repository's root")
    owners: dict[str, list[str]] = {}
    for p in pkgs:
        where = p.directory.relative_to(root) / "pyproject.toml"
        for req in p.requirements():
            match = _PIN.match(req)
            if match and match.group(1) in names and match.group(3) != f"=={p.version}":
                problems.append(
                    f"{where}: {req!r} should pin {match.group(1)}=={p.version}, the version of every "
                    "package (scripts/release --set-version writes them all)"
                )
        if _pythons_of(p.classifiers()) != pythons or not pythons:
            problems.append(
                f"{where}: its Python classifiers {_pythons_of(p.classifiers())} differ from {pythons} "
                f"({pkgs[0].name}'s): every package supports the same Pythons"
            )
        elif p.project.get("requires-python") != f">={pythons[0]}":
            problems.append(f"{where}: requires-python should be '>={pythons[0]}', the lowest classifier")
        if "Typing :: Typed" not in p.classifiers():
            problems.append(f"{where}: the classifier 'Typing :: Typed' is missing")
        if p.project.get("license") != LICENSE_EXPRESSION or p.project.get("license-files") != ["LICENSE"]:
            problems.append(f"{where}: license should be {LICENSE_EXPRESSION!r}, license-files ['LICENSE']")
        copy = p.directory / "LICENSE"
        if license_text is not None and (not copy.exists() or copy.read_text() != license_text):
            problems.append(
                f"{copy.relative_to(root)} is missing or differs from the root LICENSE: copy it "
                f"(cp LICENSE {copy.relative_to(root)}); each package's sdist must carry its own"
            )
        if not (p.directory / "README.md").exists():
            problems.append(f"{p.directory.relative_to(root)}: no README.md (its PyPI page)")
        if not p.project.get("urls"):
            problems.append(f"{where}: no [project.urls]")
        for script in p.scripts():
            owners.setdefault(script, []).append(p.name)
    for script, who in sorted(owners.items()):
        if len(who) > 1:
            problems.append(
                f"console script {script!r} is declared by {' and '.join(who)}: uninstalling one would "
                "delete the command the other still provides; keep it in one package"
            )
    for p in pkgs:
        expected = EXPECTED_SCRIPTS.get(p.name, set())
        if set(p.scripts()) != expected:
            problems.append(
                f"{p.name} declares the console scripts {sorted(p.scripts())}, expected {sorted(expected)} "
                "(scripts/_release.py EXPECTED_SCRIPTS)"
            )
    if version == "?":
        problems.append("no __version__ line found in a version.py")
    return problems


def set_version(new: str, root: Path = ROOT) -> list[Path]:
    """Write `new` into every package's version.py and every pin on a sibling package; the files changed."""
    if not re.fullmatch(r"\d+\.\d+\.\d+([abc]|rc)?\d*(\.post\d+)?(\.dev\d+)?", new):
        raise SystemExit(f"scripts/release: {new!r} is not a release version such as 2.1.0 or 2.1.0rc1")
    pkgs = packages(root)
    names = "|".join(re.escape(p.name) for p in pkgs)
    pin = re.compile(rf'"((?:{names})(?:\[[^\]]*\])?)==[^"]+"')
    changed = []
    for p in pkgs:
        text = p.version_file.read_text()
        updated = _VERSION_LINE.sub(f'__version__ = "{new}"', text)
        if updated != text:
            p.version_file.write_text(updated)
            changed.append(p.version_file)
        toml = p.directory / "pyproject.toml"
        text = toml.read_text()
        updated = pin.sub(lambda m: f'"{m.group(1)}=={new}"', text)
        if updated != text:
            toml.write_text(updated)
            changed.append(toml)
    return changed


# -- building and the built files ---------------------------------------------------------------------------


def build(out: Path, root: Path = ROOT) -> None:
    """Build every package's sdist and wheel into `out` (with hatchling, in this interpreter: no isolated
    environment, so no download; `pip install 'hatchling>=1.27'` is all it needs)."""
    out.mkdir(parents=True, exist_ok=True)
    for p in packages(root):
        done = subprocess.run(
            [sys.executable, "-m", "hatchling", "build", "-d", str(out)],
            cwd=p.directory, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"scripts/release: building {p.name} failed:\n{done.stdout}{done.stderr}")


def dist_problems(out: Path, root: Path = ROOT) -> list[str]:
    """What is wrong with the ten files in `out` (see the module's text); empty when they are publishable."""
    pkgs = packages(root)
    names = {p.name for p in pkgs}
    license_text = (root / "LICENSE").read_text()
    pythons = supported_pythons(root)
    problems: list[str] = []
    for p in pkgs:
        wheel = out / f"{p.dist_name}-{p.version}-py3-none-any.whl"
        sdist = out / f"{p.dist_name}-{p.version}.tar.gz"
        readme = (p.directory / "README.md").read_text()
        for path in (wheel, sdist):
            if not path.exists():
                problems.append(f"{path.name}: missing from {out} (scripts/release builds it)")
                continue
            files = _read_archive(path)
            meta_name = _metadata_file(path, files)
            if meta_name is None:
                problems.append(f"{path.name}: no METADATA / PKG-INFO")
                continue
            meta = email.message_from_bytes(files[meta_name])
            problems.extend(f"{path.name}: {x}" for x in _metadata_problems(meta, p, names, pythons))
            body = meta.get_payload()
            if not isinstance(body, str) or body.strip() != readme.strip():
                problems.append(f"{path.name}: the long description is not {p.directory.name}/README.md")
            licenses = [n for n in files if n.endswith("/LICENSE") and ("licenses/" in n or n.count("/") < 2)]
            if not licenses:
                problems.append(f"{path.name}: no LICENSE file inside")
            elif any(files[n].decode() != license_text for n in licenses):
                problems.append(f"{path.name}: its LICENSE differs from the repository's")
            if path is wheel:
                problems.extend(f"{path.name}: {problem}" for problem in _wheel_problems(files, p))
            else:
                top = f"{p.dist_name}-{p.version}/"
                for needed in ("pyproject.toml", "README.md", "src/", "tests/"):
                    if not any(n.startswith(top + needed) for n in files):
                        problems.append(f"{path.name}: {needed} is missing (a sdist builds and tests alone)")
    return problems


def _read_archive(path: Path) -> dict[str, bytes]:
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as z:
            return {n: z.read(n) for n in z.namelist() if not n.endswith("/")}
    with tarfile.open(path) as t:
        out = {}
        for member in t.getmembers():
            if member.isfile():
                handle = t.extractfile(member)
                if handle is not None:
                    out[member.name] = handle.read()
        return out


def _metadata_file(path: Path, files: dict[str, bytes]) -> str | None:
    wanted = ".dist-info/METADATA" if path.suffix == ".whl" else "PKG-INFO"
    candidates = [n for n in files if n.endswith(wanted) and n.count("/") == 1]
    return candidates[0] if candidates else None


def _metadata_problems(
    meta: email.message.Message, p: Package, names: set[str], pythons: list[str]
) -> list[str]:
    problems = []
    if meta.get("Name") != p.name:
        problems.append(f"Name is {meta.get('Name')!r}, expected {p.name!r}")
    if meta.get("Version") != p.version:
        problems.append(f"Version is {meta.get('Version')!r}, expected {p.version!r}")
    if meta.get("Requires-Python") != f">={pythons[0]}":
        problems.append(f"Requires-Python is {meta.get('Requires-Python')!r}, expected '>={pythons[0]}'")
    if meta.get("License-Expression") != LICENSE_EXPRESSION:
        problems.append(f"License-Expression is {meta.get('License-Expression')!r}, not {LICENSE_EXPRESSION}")
    if "LICENSE" not in (meta.get_all("License-File") or []):
        problems.append("no License-File: LICENSE")
    if meta.get("Description-Content-Type") != "text/markdown":
        problems.append("Description-Content-Type is not text/markdown")
    if _pythons_of(meta.get_all("Classifier") or []) != pythons:
        problems.append(f"its Python classifiers are not {pythons}")
    if "Typing :: Typed" not in (meta.get_all("Classifier") or []):
        problems.append("no 'Typing :: Typed' classifier")
    if not meta.get_all("Project-URL"):
        problems.append("no Project-URL")
    for req in meta.get_all("Requires-Dist") or []:
        match = _PIN.match(req.split(";")[0].strip())
        if match and match.group(1) in names and match.group(3) != f"=={p.version}":
            problems.append(f"Requires-Dist {req!r} does not pin =={p.version}")
    wanted = {_requirement_name(r) for r in p.requirements()}
    present = {_requirement_name(r) for r in meta.get_all("Requires-Dist") or []}
    if not wanted <= present:
        problems.append(f"Requires-Dist lacks {sorted(wanted - present)}")
    return problems


def _requirement_name(requirement: str) -> str:
    match = _PIN.match(requirement.split(";", maxsplit=1)[0].strip())
    return match.group(1) if match else requirement


def _wheel_problems(files: dict[str, bytes], p: Package) -> list[str]:
    problems = []
    entry = next((n for n in files if n.endswith(".dist-info/entry_points.txt")), None)
    scripts: dict[str, str] = {}
    if entry is not None:
        section = ""
        for raw in files[entry].decode().splitlines():
            line = raw.strip()
            if line.startswith("["):
                section = line
            elif "=" in line and section == "[console_scripts]":
                name, target = (part.strip() for part in line.split("=", 1))
                scripts[name] = target
    expected = EXPECTED_SCRIPTS.get(p.name, set())
    if set(scripts) != expected:
        problems.append(f"console scripts {sorted(scripts)}, expected {sorted(expected)}")
    for name, target in scripts.items():
        module = target.split(":")[0].replace(".", "/")
        if f"{module}.py" not in files and f"{module}/__init__.py" not in files:
            problems.append(f"console script {name} points to {target}, whose module is not in the wheel")
    tops = {n.split("/")[0] for n in files if not n.split("/")[0].endswith(".dist-info")}
    for top in sorted(tops):
        if f"{top}/py.typed" not in files and top != "pp":
            problems.append(f"{top}/py.typed is missing (the package is typed)")
    return problems


# -- the command ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/release", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="where to build (default: dist/)")
    parser.add_argument("--check-only", action="store_true", help="check the files in --out, build nothing")
    parser.add_argument("--set-version", metavar="X.Y.Z", help="write this version everywhere, then stop")
    args = parser.parse_args(argv)
    if args.set_version:
        for path in set_version(args.set_version):
            print(f"wrote {path.relative_to(ROOT)}")
        problems = source_problems()
        for problem in problems:
            print(f"problem: {problem}", file=sys.stderr)
        return 1 if problems else 0
    problems = source_problems()
    if problems:
        for problem in problems:
            print(f"problem: {problem}", file=sys.stderr)
        print(f"scripts/release: {len(problems)} problem(s) in the checkout; nothing built", file=sys.stderr)
        return 1
    out: Path = args.out
    start = time.monotonic()
    if not args.check_only:
        if out.exists():
            for child in out.iterdir():  # only what a build of ours makes: never a user's other files
                if child.name.startswith(tuple(f"{p.dist_name}-" for p in packages())):
                    child.unlink() if child.is_file() else shutil.rmtree(child)
        build(out)
    problems = dist_problems(out)
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    pkgs = packages()
    if problems:
        print(f"scripts/release: {len(problems)} problem(s) in {out}", file=sys.stderr)
        return 1
    shown = os.path.relpath(out)
    print(f"{len(pkgs) * 2} files in {shown}, checked in {time.monotonic() - start:.1f} s:")
    for p in pkgs:
        print(f"  {p.dist_name}-{p.version}.tar.gz  {p.dist_name}-{p.version}-py3-none-any.whl")
    print(f"next: python -m twine upload {shown}/*  (see RELEASING.md)")
    return 0
