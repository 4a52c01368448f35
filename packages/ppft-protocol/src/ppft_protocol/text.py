"""Text from a peer, made safe for a log line or an error message: `printable`.

Anything a peer controls (an opening's comment, an `AuthFailed` or `Bye` reason, a `NodeInfo` name, an
announce name, an error message or traceback relayed from a worker) may hold a newline that forges a log
line, an ANSI escape that rewrites a terminal, a bidi override that makes a line read backwards, or a
megabyte of text. `printable` turns every such character into a visible escape (``\\n``, ``\\x1b``,
``\\u202e``) and cuts the text to a bounded length with a marker saying how much was left out, so a peer's
text is always one bounded line. Printable text, non-ASCII letters included, is left as it is.

This module must never raise for any input (it runs on error paths) and never log, import or allocate more
than the bounded result needs: a 1 MB comment costs a slice, not a pass over the megabyte.
"""

from __future__ import annotations

__all__ = ["DEFAULT_LIMIT", "printable"]

DEFAULT_LIMIT = 200
"""Characters of a peer's text kept by default (before escapes are expanded)."""

_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: object, limit: int = DEFAULT_LIMIT) -> str:
    """`text` as one line of at most about `limit` characters, every unprintable character escaped.

    Newlines, tabs and carriage returns become ``\\n``, ``\\t``, ``\\r``; other control characters (ANSI
    escapes' ESC included), Unicode format characters (bidi overrides and isolates, zero-width characters),
    line and paragraph separators, unassigned and private-use code points and lone surrogates become
    ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN``, so they show instead of acting. Text longer than `limit`
    characters is cut there and ends with ``...[N more characters]``. Bytes are read as UTF-8 (an invalid
    byte 0xNN shows as ``\\udcNN``); anything else is `str()`-ed (a failing `__str__` is named, not raised).
    """
    limit = max(int(limit), 1)
    unit = "characters"
    if isinstance(text, str):
        extra = len(text) - limit
        if extra > 0:
            text = text[:limit]
    elif isinstance(text, (bytes, bytearray, memoryview)):
        data = bytes(text[: limit * 4])  # a UTF-8 character is at most 4 bytes
        decoded = data.decode("utf-8", "surrogateescape")[:limit]  # a bad byte: one lone surrogate
        extra = len(text) - len(decoded.encode("utf-8", "surrogateescape"))
        text, unit = decoded, "bytes"
    else:
        return printable(_str(text), limit)
    if not text.isprintable():
        text = "".join([c if c.isprintable() else _escape(c) for c in text])
    if extra > 0:
        text += f"...[{extra} more {unit}]"
    return text


def _escape(char: str) -> str:
    short = _SHORT.get(char)
    if short is not None:
        return short
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _str(value: object) -> str:
    try:
        return str(value)
    except Exception as exc:  # noqa: BLE001 - a broken __str__ must not hide the error being reported
        return f"<str() of a {type(value).__name__} failed: {type(exc).__name__}>"
