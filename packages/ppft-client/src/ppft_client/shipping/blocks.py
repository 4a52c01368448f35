"""A function's text cut from its file's lines without `tokenize`: what `inspect.getsource` would give.

`inspect.getsource` tokenizes the file from the function's first line, and its first call in a process
compiles `tokenize`'s large regular expressions, most of the cost of a process's first `submit`. This cut
follows the same rules (`inspect.getblock`) with a small scanner that tracks brackets, strings, comments and
continuations, and gives up (None) on anything unusual: tabs in indentation, a lambda in the header, a
backslash inside a string, unbalanced f-string braces. It is only a guess: `sources.function_source` verifies
the text against the live code exactly as it verifies inspect's, and falls back to inspect, so a wrong cut can
cost time, never ship a wrong function. It must never import `tokenize` or `inspect`.
"""

from __future__ import annotations

import linecache
import re
import types

__all__ = ["cut_source"]

_SPECIAL = re.compile(r"""['"#\\()\[\]{}:]""")  # all the scanner looks at (small regexes: cheap to build)
_LAMBDA = re.compile(r"\blambda\b")  # a lambda's colon could pass for the header's


def cut_source(func: types.FunctionType) -> str | None:
    """`func`'s text as `inspect.getsource` would give it, cut from the file's lines, or None if unsure.

    Only a guess: `function_source` verifies it as it verifies inspect's text, and falls back to inspect.
    """
    code = func.__code__
    if code.co_name == "<lambda>" or "__wrapped__" in func.__dict__:  # inspect would follow __wrapped__
        return None
    linecache.checkcache(code.co_filename)  # as inspect does: a file edited since is read again
    lines = linecache.getlines(code.co_filename, func.__globals__)
    end = _block_end(lines, code.co_firstlineno - 1, code.co_name)
    return None if end is None else "".join(lines[code.co_firstlineno - 1 : end])


def _block_end(lines: list[str], start: int, name: str) -> int | None:
    """Where the `def name` block that starts at `lines[start]` ends, as `inspect.getblock` sees it: the
    decorators, the header, each logical line indented deeper (a one-line def has none), then the comment
    lines indented as the body (`inspect.BlockFinder` keeps them). None when the lines look otherwise."""
    indent = _indent_of(lines[start]) if 0 <= start < len(lines) else None
    if indent is None:
        return None
    scan = _LineScanner()
    i = start
    while _indent_of(lines[i]) == indent and lines[i].startswith("@", indent):  # decorators
        i = scan.logical_end(lines, i) or len(lines)
        if i >= len(lines):
            return None
    if not _is_def(lines[i], indent, name):
        return None
    end = scan.logical_end(lines, i)
    if end is None or scan.colon_line < 0 or _LAMBDA.search("".join(lines[start:end])):
        return None
    after_colon = lines[scan.colon_line][scan.colon + 1 :].strip()
    if after_colon[:1] not in ("", "#"):  # a one-line def: the next line of code may not be deeper
        following = next((_indent_of(x) for x in lines[end:] if x.strip()[:1] not in ("", "#")), indent)
        return end if after_colon[0] != "\\" and following is not None and following <= indent else None
    if scan.colon_line != end - 1:  # the header must end at its colon
        return None
    body = -1  # the body's indentation
    last = end
    while end < len(lines):
        text = lines[end].strip()
        column = _indent_of(lines[end])
        if not text:
            end += 1
        elif column is None:
            return None
        elif text[0] == "#":
            last = end + 1 if 0 <= body <= column else last
            end += 1
        elif column <= indent:
            break
        elif body >= 0 and column < body:
            return None
        else:
            body = column if body < 0 else body
            end = last = scan.logical_end(lines, end) or 0
            if not end:
                return None
    return last if body >= 0 else None


def _indent_of(line: str) -> int | None:
    """The number of spaces `line` starts with; None when a tab or form feed comes first."""
    column = len(line) - len(line.lstrip(" "))
    return None if line[column : column + 1] in ("\t", "\f") else column


def _is_def(line: str, indent: int, name: str) -> bool:
    """Whether `line` is `[async] def name(` (or `def name[`) at exactly `indent` spaces."""
    rest = line[indent:] if _indent_of(line) == indent else ""
    if rest.startswith("async") and rest[5:6] in (" ", "\t"):
        rest = rest[5:].lstrip(" \t")
    if not (rest.startswith("def") and rest[3:4] in (" ", "\t")):
        return False
    rest = rest[3:].lstrip(" \t")
    return rest.startswith(name) and rest[len(name) :].lstrip(" \t")[:1] in ("(", "[")


class _LineScanner:
    """Enough of Python's tokenizer to know where a logical line ends: brackets, strings, comments, `\\`.

    Brackets and a triple-quoted string may stay open from one physical line to the next.
    """

    __slots__ = ("colon", "colon_line", "depth", "fstring", "pieces", "quote")

    def __init__(self) -> None:
        self.depth = 0
        self.quote = ""  # the closing delimiter of a string still open, or ""
        self.fstring = False  # whether that string may hold replacement fields ...
        self.pieces: list[str] = []  # ... and then its text so far
        self.colon = self.colon_line = -1  # the logical line's first colon outside brackets and strings

    def logical_end(self, lines: list[str], i: int) -> int | None:
        """The index just after the logical line that starts at `lines[i]`; None when unsure."""
        self.colon = self.colon_line = -1
        while i < len(lines):
            line = lines[i]
            if not line.endswith("\n"):
                if i != len(lines) - 1:  # only the file's last line may lack one, as tokenize allows
                    return None
                line += "\n"
            going_on = self.scan(line)
            if self.colon >= 0 and self.colon_line < 0:
                self.colon_line = i
            i += 1
            if not going_on:
                return None if going_on is None else i
        return None

    def scan(self, line: str) -> bool | None:
        """True when the logical line goes on after `line`, False when it ends there, None when unsure."""
        pos = 0
        while True:
            if self.quote:
                end = _string_end(line, pos, self.quote)
                if end < 0:
                    if self.fstring:
                        self.pieces.append(line[pos:])
                    return True if len(self.quote) == 3 else None  # `'...\\` going on: unusual
                if self.fstring:
                    self.pieces.append(line[pos : end - len(self.quote)])
                    if not _fields_balanced("".join(self.pieces)):
                        return None
                    self.pieces.clear()
                self.quote = ""
                pos = end
            m = _SPECIAL.search(line, pos)
            if m is None:
                return self.depth > 0
            char = m.group()
            pos = m.end()
            if char in "'\"":
                self.quote = char * 3 if line.startswith(char * 3, pos - 1) else char
                # a prefix with f (or t, 3.14's templates) may hold fields; `if"x"` is taken as one too
                self.fstring = not set(line[max(pos - 3, 0) : pos - 1]).isdisjoint("fFtT")
                pos += len(self.quote) - 1
            elif char in "([{":
                self.depth += 1
            elif char in ")]}":
                self.depth -= 1
                if self.depth < 0:
                    return None
            elif char == "#":
                return self.depth > 0
            elif char == "\\":  # only as the last character: a continuation
                return True if pos == len(line) - 1 else None
            elif self.depth == 0 and self.colon < 0:
                self.colon = pos - 1


def _string_end(line: str, pos: int, quote: str) -> int:
    """The index just after the delimiter `quote` that closes a string in `line` from `pos`, or -1."""
    while (found := line.find(quote, pos)) >= 0:
        before = found
        while before > pos and line[before - 1] == "\\":
            before -= 1
        if (found - before) % 2 == 0:  # not escaped
            return found + len(quote)
        pos = found + 1
    return -1


def _fields_balanced(text: str) -> bool:
    """Whether an f-string's text closes every field it opens: from 3.12 a field may hold the string's
    own quote (`f"{d["k"]}"`), which ends it early for this scanner, leaving a field open."""
    depth = i = 0
    while i < len(text):
        char = text[i]
        if char in "{}" and depth == 0 and text.startswith(char * 2, i):  # `{{` or `}}`: a literal brace
            i += 1
        elif char in "{}":
            depth += 1 if char == "{" else -1
            if depth < 0:
                return False
        i += 1
    return depth == 0
