"""The shape of the code: imports go one way, between packages and between the rooms of a package, with no
cycle anywhere; no module is over 500 lines; every module says what it is for.

Imports are read with `ast` from every module of every package (and of scripts/_bench), wherever they stand:
at module level, in a function, under `if TYPE_CHECKING:` (a type-only import still couples two modules).
`from pkg import name` counts as an import of the submodule `pkg.name` when there is one, else of `pkg`
itself; importing `a.b.c` does not count as importing the packages `a` and `a.b` on its way (their
`__init__` only names what is inside them).

The order, from the bottom:

    packages   ppft_protocol <- ppft_worker <- ppft_client, ppft_server <- ppft <- pp
               (ppft_client and ppft_server never import each other)
    rooms      the top-level modules and subpackages of a package, in the order of ROOMS below: a room
               imports only rooms before it (and its own modules); the package's `__init__` comes last

Another room, or another package, imports a room that is a subpackage through the names of its `__init__`'s
`__all__`, never a module inside it: a room's modules are its own to rearrange. A new top-level module or
subpackage must be given its place in ROOMS (the test says so), so that every new part is put in the order
on purpose.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 500

PACKAGE_ORDER = {
    "ppft_protocol": 0,
    "ppft_worker": 1,
    "ppft_client": 2,
    "ppft_server": 2,
    "ppft": 3,
    "pp": 4,
    "_bench": 5,
}
APART = {frozenset(("ppft_client", "ppft_server"))}

ROOMS: dict[str, list[str]] = {
    "ppft_protocol": [
        "version",
        "errors",
        "text",
        "cpython",
        "codec",
        "buffers",
        "framing",
        "batches",
        "live",
        "limits",
        "refs",
        "relay",
        "channel",
        "direct",
        "messages",
        "handshake",
        "bodies",
        "discovery",
        "connection",
    ],
    "ppft_worker": [
        "version",
        "errors",
        "segments",
        "mapped",
        "oob",
        "pythons",
        "portable",
        "runtime",
        "pipes",
        "process",
        "pool",
        "observe",
        "stdio",
        "dialin",
        "__main__",
    ],
    "ppft_client": [
        "version",
        "errors",
        "limits",
        "rebuild",
        "pythons",
        "joblock",
        "stats",
        "outcomes",
        "shipping",
        "refs",
        "output",
        "job",
        "completion",
        "nodes",
        "ssh",
        "waiting",
        "scheduler",
        "status",
        "server",
        "executor",
        "template",
    ],
    "ppft_server": [
        "version",
        "pidfile",
        "gctune",
        "gate",
        "settings",
        "fairqueue",
        "peers",
        "limits",
        "watch",
        "counting",
        "refs",
        "mixed",
        "direct_refs",
        "direct",
        "session",
        "node",
        "status",
        "webpage",
        "announce",
        "cli",
        "__main__",
    ],
}
"""Each package's rooms (top-level modules and subpackages), from the bottom. A package without an entry has
no order among its modules beyond having no cycle."""


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    tree: ast.Module
    imports: list[tuple[str, tuple[str, ...], int]] = field(default_factory=list)  # (target, names, line)

    @property
    def package(self) -> str:
        return self.name.split(".")[0]


def _find_modules() -> dict[str, Module]:
    roots = [*sorted(ROOT.glob("packages/*/src")), ROOT / "scripts"]
    modules: dict[str, Module] = {}
    for src in roots:
        files = src.rglob("*.py") if src.name == "src" else (src / "_bench").rglob("*.py")
        for path in sorted(files):
            parts = list(path.relative_to(src).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            name = ".".join(parts)
            modules[name] = Module(name, path, is_package, ast.parse(path.read_text(), str(path)))
    return modules


MODULES = _find_modules()


def _resolve(module: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.name.split(".")
    if not module.is_package:
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _read_imports() -> None:
    for module in MODULES.values():
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in MODULES:
                        module.imports.append((alias.name, (), node.lineno))
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(module, node)
                plain: list[str] = []
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    if sub in MODULES:
                        module.imports.append((sub, (), node.lineno))
                    else:
                        plain.append(alias.name)
                if plain and source in MODULES:
                    module.imports.append((source, tuple(plain), node.lineno))


_read_imports()


def _room(name: str) -> str | None:
    """The room of a module: the first part of its name below its package, None for the package itself."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None


def _rank(package: str, room: str | None) -> int:
    rooms = ROOMS[package]
    return len(rooms) if room is None else rooms.index(room)


def _declared_all(module: Module) -> set[str] | None:
    for node in module.tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return {elt.value for elt in node.value.elts if isinstance(elt, ast.Constant)}  # type: ignore[attr-defined]
    return None


def _where(module: Module, line: int) -> str:
    return f"{module.path.relative_to(ROOT)}:{line}"


def test_packages_import_one_way():
    wrong = []
    for module in MODULES.values():
        for target, _, line in module.imports:
            a, b = module.package, target.split(".")[0]
            if a == b:
                continue
            if PACKAGE_ORDER[b] >= PACKAGE_ORDER[a] or frozenset((a, b)) in APART:
                wrong.append(f"{_where(module, line)}: {module.name} imports {target}")
    assert not wrong, "imports against protocol <- worker <- client, server <- ppft:\n" + "\n".join(wrong)


def test_every_room_has_its_place_in_the_order():
    unplaced = sorted(
        f"{name} (add {_room(name)!r} to ROOMS[{module.package!r}])"
        for name, module in MODULES.items()
        if module.package in ROOMS and _room(name) is not None and _room(name) not in ROOMS[module.package]
    )
    assert not unplaced, "modules outside the rooms' order:\n" + "\n".join(unplaced)


def test_rooms_import_one_way():
    wrong = []
    for module in MODULES.values():
        package = module.package
        if package not in ROOMS or _room(module.name) not in ROOMS[package] + [None]:
            continue
        mine = _rank(package, _room(module.name))
        for target, _, line in module.imports:
            if target.split(".")[0] != package or _room(target) == _room(module.name):
                continue
            if _room(target) not in ROOMS[package] + [None]:
                continue  # reported by test_every_room_has_its_place_in_the_order
            if _rank(package, _room(target)) >= mine:
                wrong.append(f"{_where(module, line)}: {module.name} imports {target}, which is above it")
    assert not wrong, "imports against the rooms' order (ROOMS):\n" + "\n".join(wrong)


def test_a_room_is_entered_only_through_its_public_names():
    wrong = []
    for module in MODULES.values():
        for target, names, line in module.imports:
            parts = target.split(".")
            same_room = parts[0] == module.package and _room(target) == _room(module.name)
            if same_room or len(parts) < 2:
                continue
            room = ".".join(parts[:2])
            if MODULES[room].is_package and target != room:
                wrong.append(f"{_where(module, line)}: {module.name} imports {target}: import from {room}")
            elif MODULES[room].is_package:
                public = _declared_all(MODULES[room]) or set()
                for name in sorted(set(names) - public):
                    where = _where(module, line)
                    wrong.append(f"{where}: {module.name} imports {name} from {room}, not in its __all__")
    assert not wrong, "imports that reach into another room:\n" + "\n".join(wrong)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, without recursion)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycle():
    graph = {name: {t for t, _, _ in m.imports if t != name} for name, m in MODULES.items()}
    cycles = _cycles(graph)
    assert not cycles, "modules that import each other, directly or around a circle:\n" + "\n".join(
        " <-> ".join(c) for c in cycles
    )


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


PYTHON_FILES = sorted(
    p
    for pattern in ("packages/*/src/**/*.py", "packages/*/tests/**/*.py", "tests/**/*.py", "scripts/**/*.py")
    for p in ROOT.glob(pattern)
)


@pytest.mark.parametrize("path", PYTHON_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_over_500_lines(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, (
        f"{path.relative_to(ROOT)} has {lines} lines: split it by responsibility (what it is for, its first "
        f"lines say), not by line count"
    )


def test_every_module_says_what_it_is_for():
    silent = sorted(
        str(m.path.relative_to(ROOT))
        for m in MODULES.values()
        if m.package != "_bench" and not (ast.get_docstring(m.tree) or "").strip()
    )
    assert not silent, "modules without a docstring saying what they are for:\n" + "\n".join(silent)
