"""Finding the source of a function or class, and proving that it is the source of *that* object.

ppft 1.7 ships `dill.source`'s text for a function, which is wrong whenever the text no longer matches the
object: the file was edited since import, a REPL or notebook holds an earlier definition of the same name,
a decorator replaced the function. Here a source is only returned after it was compiled and its code
objects compared with the live ones (bytecode, names, constants, nested code; line numbers and file names
may differ). A caller that gets None pickles the object instead. This module must never execute the code it
compiles, import anything, or return a source it did not verify.

A function's text is first cut from its file's `linecache` lines, from `co_firstlineno` to the end of the
block its indentation delimits, by a scanner that knows just brackets, strings, comments and backslashes;
it gives up on anything unusual (tabs, a `lambda` in the header, an f-string it cannot follow). Only then
is `inspect.getsource` asked: it tokenizes, and its first call compiles `tokenize`'s large regular
expressions, most of the cost of a first `submit` (`scripts/bench --only latency` sees it in its first
round trip). The cut text is verified exactly as inspect's, so a
wrong cut can cost a fallback to inspect, never a wrong function; and unless its check failed on the
header (which both texts share), inspect's text is checked too, so the cut never makes a function pickled.

CPython 3.11+ compiles `name.attr(...)` differently when `name` is bound by an `import` in the same file
(no method-call optimisation), so the check compiles the source as if those names were imported: the
bytecode then matches, and the source compiled alone on a worker means the same (how a call is made, not
what it does, so any guess of those names is safe). First guess: the names the function uses that its
globals bind to a module or to another module's function or class; then what a parse of the whole file
finds imported (cached per file version).
"""

from __future__ import annotations

import ast
import functools
import inspect
import linecache
import logging
import sys
import textwrap
import types
from typing import Any, NamedTuple

from ppft_worker.portable import same_code, same_const

from .blocks import cut_source

__all__ = [
    "Source",
    "class_globals",
    "class_source",
    "code_names",
    "function_source",
    "global_reads",
    "global_writes",
    "is_builtin_name",
]

log = logging.getLogger("ppft.client")

_FUTURE_ANNOTATIONS = "from __future__ import annotations\n"
_VERIFY_FILENAME = "<ppft source check>"
_IMPORTS_CACHE_SIZE = 64
_imports_cache: dict[str, tuple[list[str], frozenset[str]]] = {}


class Source(NamedTuple):
    """A verified source: the text to ship, every global or attribute name it refers to, and the names it
    reads or writes as globals (the ones whose values may have to travel with it)."""

    text: str
    names: tuple[str, ...]
    reads: frozenset[str] = frozenset()


def function_source(func: Any) -> Source | None:
    """The verified source of a plain top-level function, or None when it must travel pickled.

    Plain means: no closure, no decorator, `__qualname__ == __name__`, not a lambda, and default values
    that are literals equal to the current ones (anything else would be evaluated anew on the worker).
    Annotations are never evaluated there: the text gets `from __future__ import annotations`.
    The text cut by `blocks.cut_source` is tried first; inspect's only when that one is not settled (see the
    module's docstring): both go through the same verification.
    """
    if (
        type(func) is not types.FunctionType
        or func.__closure__
        or func.__qualname__ != func.__name__
        or func.__name__ == "<lambda>"
    ):
        return None
    cut = cut_source(func)
    if cut is not None:
        source, settled = _verified_function(func, cut, func.__code__.co_filename)
        if source is not None or settled:
            return source
    inspected = _inspect_source(func)
    if inspected is None:
        return None
    text, filename = inspected
    if text == cut:  # the same text already failed its check
        return None
    return _verified_function(func, text, filename)[0]


def class_source(cls: type) -> Source | None:
    """The verified source of an undecorated top-level class, or None when it must travel pickled.

    Every function in the class's namespace (methods, static and class methods, property accessors) must
    match a function of the source, so a method added after the class statement forces pickling.
    """
    if cls.__qualname__ != cls.__name__ or cls.__module__ == "builtins":
        return None
    inspected = _inspect_source(cls)
    if inspected is None:
        return None
    text, filename = inspected
    found = _parse_definition(cls, text)
    if found is None:
        return None
    node, text, future = found
    if not isinstance(node, ast.ClassDef) or node.decorator_list:
        return None
    module = sys.modules.get(cls.__module__)
    imported = _imported_names(filename, vars(module) if module is not None else None) if filename else ()
    code = _compile_check(future + _prelude(imported) + text)
    if code is None:
        return None
    bodies = _find_code(code, cls.__name__)
    if len(bodies) != 1:
        return None
    methods: dict[str, list[types.CodeType]] = {}
    for const in bodies[0].co_consts:
        if isinstance(const, types.CodeType):
            methods.setdefault(const.co_name, []).append(const)
    inherited = {id(v) for base in cls.__mro__[1:] for v in vars(base).values()}
    for value in vars(cls).values():
        if id(value) in inherited:  # put there by the metaclass (an Enum's __new__): the source does it too
            continue
        for function in _functions_in(value):
            candidates = methods.get(function.__code__.co_name, ())
            if not any(_same_code(c, function.__code__) for c in candidates):
                log.debug("class %s: source and methods differ; shipping it pickled", cls.__name__)
                return None
    # what the class statement itself evaluates (bases, keywords), then what its body and methods use
    names: dict[str, None] = {}
    for expr in (*node.bases, *(k.value for k in node.keywords)):
        for sub in ast.walk(expr):
            if isinstance(sub, ast.Name):
                names[sub.id] = None
            elif isinstance(sub, ast.Attribute):
                names[sub.attr] = None
    names.update(code_names(bodies[0]))
    return Source(future + text, tuple(names), global_reads(bodies[0]))


def _inspect_source(obj: Any) -> tuple[str, str | None] | None:
    """`inspect`'s source text of `obj` and its file, or None: no file (a REPL), a C object or a builtin
    class, or inspect cannot tell."""
    try:
        return inspect.getsource(obj), inspect.getsourcefile(obj)
    except (OSError, TypeError):
        return None


def code_names(code: types.CodeType) -> dict[str, None]:
    """Every global or attribute name `code` and its nested code objects use, in order of appearance."""
    names: dict[str, None] = dict.fromkeys(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.update(code_names(const))
    return names


_GLOBAL_OPS = frozenset(("LOAD_GLOBAL", "STORE_GLOBAL", "DELETE_GLOBAL", "LOAD_NAME", "STORE_NAME"))
_GLOBAL_WRITES = frozenset(("STORE_GLOBAL", "DELETE_GLOBAL"))


def global_reads(code: types.CodeType) -> frozenset[str]:
    """The names `code` and its nested code use as globals (`LOAD_GLOBAL`, `global x; x = ...`, a class
    body's `LOAD_NAME`): unlike `code_names`, no attribute names (`ORDER.index` reads `ORDER`, not
    `index`). Costs a disassembly, so callers keep the answer (the body cache does)."""
    return _global_names(code)[0]


def global_writes(code: types.CodeType) -> frozenset[str]:
    """The names `code` and its nested code assign or delete as globals (`global x; x = ...`)."""
    return _global_names(code)[1]


@functools.lru_cache(maxsize=1024)
def _global_names(code: types.CodeType) -> tuple[frozenset[str], frozenset[str]]:
    import dis  # noqa: PLC0415 - only when a body is built (inspect has loaded it by then anyway)

    names: set[str] = set()
    written: set[str] = set()
    todo = [code]
    while todo:
        c = todo.pop()
        for instruction in dis.get_instructions(c):
            opname = instruction.opname
            if opname in _GLOBAL_OPS:
                names.add(instruction.argval)
                if opname in _GLOBAL_WRITES:
                    written.add(instruction.argval)
        todo.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    return frozenset(names), frozenset(written)


def is_builtin_name(own: dict[str, Any], name: str) -> bool:
    """Whether `name`, absent from a module's globals `own`, is a builtin there."""
    builtins = own.get("__builtins__", __builtins__)
    if isinstance(builtins, types.ModuleType):
        builtins = vars(builtins)
    return isinstance(builtins, dict) and name in builtins


def class_globals(cls: type) -> dict[str, Any] | None:
    """The globals of the module that defined `cls`: its methods', else its module's."""
    for value in vars(cls).values():
        func = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
        if isinstance(func, types.FunctionType) and func.__qualname__.startswith(f"{cls.__qualname__}."):
            return func.__globals__
    module = sys.modules.get(cls.__module__)
    return vars(module) if module is not None else None


def _functions_in(value: object) -> list[types.FunctionType]:
    """The Python functions a class attribute holds: a method, a static/class method, a property's."""
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    if isinstance(value, property):
        return [f for f in (value.fget, value.fset, value.fdel) if isinstance(f, types.FunctionType)]
    return [value] if isinstance(value, types.FunctionType) else []


# -- verifying a text -----------------------------------------------------------------------------------


def _verified_function(
    func: types.FunctionType, text: str, filename: str | None
) -> tuple[Source | None, bool]:
    """`func`'s source if `text` passes every check, and whether that answer holds for any text of `func`.

    Once `text` parsed as `func`'s definition, its header (decorators, defaults) is what any text from the
    same line holds: rejecting it there is final, and so is a match. A parse or code mismatch is not.
    """
    found = _parse_definition(func, text)
    if found is None:
        return None, False
    node, text, future = found
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return None, False
    if node.decorator_list or not _literal_defaults(node, func):
        return None, True
    used = _all_names(func.__code__)
    guessed = _imported_looking(func.__globals__, used)
    source = Source(future + text, tuple(code_names(func.__code__)))
    if _compiles_to(func, future + _prelude(guessed) + text):
        return source, True
    if filename:  # the guess did not match: what the file really imports, of what the function uses
        imported = _imported_names(filename, func.__globals__) & used
        if imported != guessed and _compiles_to(func, future + _prelude(imported) + text):
            return source, True
    log.debug("function %s: its source does not match its code", func.__qualname__)
    return None, False


def _compiles_to(func: types.FunctionType, check_text: str) -> bool:
    code = _compile_check(check_text)
    return code is not None and any(_same_code(c, func.__code__) for c in _find_code(code, func.__name__))


def _parse_definition(obj: Any, text: str) -> tuple[ast.stmt, str, str] | None:
    """The single statement `text` holds if it defines `obj`'s name, the dedented text, its future line."""
    text = textwrap.dedent(text)
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # e.g. the lines are no statement
        return None
    if len(tree.body) != 1:
        return None
    node = tree.body[0]
    if getattr(node, "name", None) != obj.__name__:
        return None
    return node, text, _FUTURE_ANNOTATIONS if _has_annotations(node) else ""


def _prelude(imported: frozenset[str] | tuple[()]) -> str:
    return "".join(f"import {name}\n" for name in sorted(imported))


def _all_names(code: types.CodeType) -> frozenset[str]:
    """Every name `code` and its nested code use, local or global: any of them may be an import's."""
    names: set[str] = set()
    todo = [code]
    while todo:
        c = todo.pop()
        names.update(c.co_names, c.co_varnames, c.co_cellvars, c.co_freevars)
        todo.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    return frozenset(names)


def _imported_looking(module_globals: dict[str, Any], used: frozenset[str]) -> frozenset[str]:
    """The names of `used` that `module_globals` binds as an import would: modules, other modules' code."""
    module = module_globals.get("__name__")
    names = set()
    for name in used:
        value = module_globals.get(name)
        if isinstance(value, types.ModuleType) or (
            isinstance(value, (type, types.FunctionType, types.BuiltinFunctionType))
            and getattr(value, "__module__", module) != module
        ):
            names.add(name)
    return frozenset(names)


def _imported_names(filename: str, module_globals: dict[str, Any] | None) -> frozenset[str]:
    """The names an `import` statement binds at module level in `filename` (cached per file version)."""
    lines = linecache.getlines(filename, module_globals)
    cached = _imports_cache.get(filename)
    if cached is not None and cached[0] is lines:
        return cached[1]
    names: set[str] = set()
    try:
        tree = ast.parse("".join(lines))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        tree = None
    if tree is not None:
        todo: list[ast.AST] = list(tree.body)
        while todo:
            node = todo.pop()
            if isinstance(node, ast.Import):
                names.update(a.asname or a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                names.update(a.asname or a.name for a in node.names if a.name != "*")
            elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                todo.extend(ast.iter_child_nodes(node))  # if/try/with blocks at module level
    result = frozenset(names)
    if len(_imports_cache) >= _IMPORTS_CACHE_SIZE:
        _imports_cache.clear()
    _imports_cache[filename] = (lines, result)
    return result


def _has_annotations(node: ast.AST) -> bool:
    for sub in ast.walk(node):
        if isinstance(sub, ast.AnnAssign):
            return True
        if isinstance(sub, ast.arg) and sub.annotation is not None:
            return True
        if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)) and sub.returns is not None:
            return True
    return False


def _literal_defaults(node: ast.FunctionDef | ast.AsyncFunctionDef, func: types.FunctionType) -> bool:
    """Whether the source's default values are literals equal to the function's current defaults."""
    nodes = node.args.defaults
    actual = func.__defaults__ or ()
    if len(nodes) != len(actual):
        return False
    kw_nodes = {
        a.arg: d for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults, strict=True) if d is not None
    }
    kw_actual = func.__kwdefaults__ or {}
    if kw_nodes.keys() != kw_actual.keys():
        return False
    pairs = [*zip(nodes, actual, strict=True), *((kw_nodes[k], kw_actual[k]) for k in kw_nodes)]
    for default, value in pairs:
        try:
            literal = ast.literal_eval(default)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return False
        if not _same_const(literal, value):
            return False
    return True


def _compile_check(text: str) -> types.CodeType | None:
    try:
        return compile(text, _VERIFY_FILENAME, "exec", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _find_code(code: types.CodeType, name: str) -> list[types.CodeType]:
    return [c for c in code.co_consts if isinstance(c, types.CodeType) and c.co_name == name]


_same_code = same_code  # one definition each, shared with the portable pickles of ppft_worker.portable
_same_const = same_const
