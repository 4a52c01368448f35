"""Finding the source of a function or class, and proving that it is the source of *that* object.

ppft 1.7 ships `dill.source`'s text for a function, which is wrong whenever the text no longer matches the
object: the file was edited since import, a REPL or notebook holds an earlier definition of the same name,
a decorator replaced the function. Here a source is only returned after it was compiled and its code
objects compared with the live ones (bytecode, names, constants, nested code; line numbers and file names
may differ). A caller that gets None pickles the object instead. This module must never execute the code it
compiles, import anything, or return a source it did not verify.

CPython compiles `name.attr(...)` differently when `name` is bound by an `import` in the same file (no
method-call optimisation), so the check compiles the source as if the file's imported names were imported:
the bytecode then matches, and the source compiled alone on a worker means the same.
"""

from __future__ import annotations

import ast
import inspect
import linecache
import logging
import sys
import textwrap
import types
from typing import Any, NamedTuple

__all__ = ["Source", "class_source", "code_names", "function_source"]

log = logging.getLogger("ppft.client")

_FLAG_MASK = 0x3FF  # code flags that change behaviour (generator, varargs, ...); higher bits are futures
_FUTURE_ANNOTATIONS = "from __future__ import annotations\n"
_VERIFY_FILENAME = "<ppft source check>"
_IMPORTS_CACHE_SIZE = 64
_imports_cache: dict[str, tuple[list[str], frozenset[str]]] = {}


class Source(NamedTuple):
    """A verified source: the text to ship and every global or attribute name it refers to."""

    text: str
    names: tuple[str, ...]


def function_source(func: Any) -> Source | None:
    """The verified source of a plain top-level function, or None when it must travel pickled.

    Plain means: no closure, no decorator, `__qualname__ == __name__`, not a lambda, and default values
    that are literals equal to the current ones (anything else would be evaluated anew on the worker).
    Annotations are never evaluated there: the text gets `from __future__ import annotations`.
    """
    if (
        type(func) is not types.FunctionType
        or func.__closure__
        or func.__qualname__ != func.__name__
        or func.__name__ == "<lambda>"
    ):
        return None
    found = _parsed_source(func, func.__globals__)
    if found is None:
        return None
    node, text, check_text = found
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.decorator_list:
        return None
    if not _literal_defaults(node, func):
        return None
    code = _compile_check(check_text)
    if code is None:
        return None
    if not any(_same_code(c, func.__code__) for c in _find_code(code, func.__name__)):
        log.debug("function %s: its source does not match its code; shipping it pickled", func.__qualname__)
        return None
    return Source(text, tuple(code_names(func.__code__)))


def class_source(cls: type) -> Source | None:
    """The verified source of an undecorated top-level class, or None when it must travel pickled.

    Every function in the class's namespace (methods, static and class methods, property accessors) must
    match a function of the source, so a method added after the class statement forces pickling.
    """
    if cls.__qualname__ != cls.__name__ or cls.__module__ == "builtins":
        return None
    module = sys.modules.get(cls.__module__)
    found = _parsed_source(cls, vars(module) if module is not None else None)
    if found is None:
        return None
    node, text, check_text = found
    if not isinstance(node, ast.ClassDef) or node.decorator_list:
        return None
    code = _compile_check(check_text)
    if code is None:
        return None
    bodies = _find_code(code, cls.__name__)
    if len(bodies) != 1:
        return None
    methods: dict[str, list[types.CodeType]] = {}
    for const in bodies[0].co_consts:
        if isinstance(const, types.CodeType):
            methods.setdefault(const.co_name, []).append(const)
    for value in vars(cls).values():
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
    return Source(text, tuple(names))


def code_names(code: types.CodeType) -> dict[str, None]:
    """Every global or attribute name `code` and its nested code objects use, in order of appearance."""
    names: dict[str, None] = dict.fromkeys(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.update(code_names(const))
    return names


def _functions_in(value: object) -> list[types.FunctionType]:
    """The Python functions a class attribute holds: a method, a static/class method, a property's."""
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    if isinstance(value, property):
        return [f for f in (value.fget, value.fset, value.fdel) if isinstance(f, types.FunctionType)]
    return [value] if isinstance(value, types.FunctionType) else []


def _parsed_source(obj: Any, module_globals: dict[str, Any] | None) -> tuple[ast.stmt, str, str] | None:
    """The single statement defining `obj`, the text to ship, and the text to compile to check it."""
    try:
        text = textwrap.dedent(inspect.getsource(obj))
        filename = inspect.getsourcefile(obj)
    except (OSError, TypeError):  # no file (a REPL), a C object, or inspect cannot tell
        return None
    try:
        tree = ast.parse(text)
    except SyntaxError:  # e.g. the file changed and the lines no longer form a statement
        return None
    if len(tree.body) != 1:
        return None
    node = tree.body[0]
    if getattr(node, "name", None) != obj.__name__:
        return None
    future = _FUTURE_ANNOTATIONS if _has_annotations(node) else ""
    imported = _imported_names(filename, module_globals) if filename else frozenset()
    prelude = "".join(f"import {name}\n" for name in sorted(imported))
    return node, future + text, future + prelude + text


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


def _same_code(a: types.CodeType, b: types.CodeType) -> bool:
    """Whether two code objects do the same thing: line numbers and file names may differ, nothing else."""
    if (
        a.co_code != b.co_code
        or a.co_names != b.co_names
        or a.co_varnames != b.co_varnames
        or a.co_freevars != b.co_freevars
        or a.co_cellvars != b.co_cellvars
        or a.co_argcount != b.co_argcount
        or a.co_posonlyargcount != b.co_posonlyargcount
        or a.co_kwonlyargcount != b.co_kwonlyargcount
        or (a.co_flags ^ b.co_flags) & _FLAG_MASK
        or getattr(a, "co_exceptiontable", None) != getattr(b, "co_exceptiontable", None)
        or len(a.co_consts) != len(b.co_consts)
    ):
        return False
    return all(_same_const(x, y) for x, y in zip(a.co_consts, b.co_consts, strict=True))


def _same_const(x: object, y: object) -> bool:
    if type(x) is not type(y):
        return False
    if isinstance(x, types.CodeType):
        return _same_code(x, y)  # type: ignore[arg-type]
    if isinstance(x, tuple):
        other: tuple[object, ...] = y  # type: ignore[assignment]
        return len(x) == len(other) and all(map(_same_const, x, other))
    if isinstance(x, (float, complex)):
        return repr(x) == repr(y)  # tells 0.0 from -0.0, and nan equals nan
    try:
        return bool(x == y)
    except Exception:  # noqa: BLE001 - a value whose __eq__ fails is simply not the same constant
        return False
