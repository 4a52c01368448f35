"""`printable`: a peer's text as one bounded line, every character that could act on a terminal or a log
escaped, printable text (non-ASCII letters included) unchanged."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ppft_protocol import printable
from ppft_protocol.text import DEFAULT_LIMIT


def test_printable_text_is_unchanged() -> None:
    assert printable("client 127.0.0.1:5000 (ppft 2.0.0)") == "client 127.0.0.1:5000 (ppft 2.0.0)"
    assert printable("café 日本 Ωμέγα") == "café 日本 Ωμέγα"
    assert printable("") == ""


def test_a_forged_log_line_stays_on_the_line_it_came_in() -> None:
    text = "ok\n2026-01-01 00:00:00,000 - ppft.server - CRITICAL - forged line\r\n"
    out = printable(text)
    assert "\n" not in out and "\r" not in out
    assert out == "ok\\n2026-01-01 00:00:00,000 - ppft.server - CRITICAL - forged line\\r\\n"


@pytest.mark.parametrize(
    "char, shown",
    [
        ("\x1b", "\\x1b"),  # ANSI escape sequences start here
        ("\x07", "\\x07"),
        ("\x00", "\\x00"),
        ("\x7f", "\\x7f"),
        ("\x9b", "\\x9b"),  # the 8-bit CSI
        ("\t", "\\t"),
        ("\u202e", "\\u202e"),  # RIGHT-TO-LEFT OVERRIDE
        ("\u2066", "\\u2066"),  # LEFT-TO-RIGHT ISOLATE
        ("\u200b", "\\u200b"),  # ZERO WIDTH SPACE
        ("\ufeff", "\\ufeff"),
        ("\u2028", "\\u2028"),  # LINE SEPARATOR
        ("\u2029", "\\u2029"),
        ("\udcff", "\\udcff"),  # a lone surrogate (surrogateescape'd byte)
        ("\U000e0001", "\\U000e0001"),  # LANGUAGE TAG
        ("\U0010fffd", "\\U0010fffd"),  # private use
    ],
)
def test_every_unprintable_character_is_shown_as_an_escape(char: str, shown: str) -> None:
    assert printable(f"a{char}b") == f"a{shown}b"


def test_ansi_codes_cannot_reach_the_terminal() -> None:
    assert printable("\x1b[31mred\x1b[0m\x1b[2J") == "\\x1b[31mred\\x1b[0m\\x1b[2J"


def test_long_text_is_cut_with_a_marker_saying_how_much_was_left_out() -> None:
    assert printable("x" * 300) == "x" * DEFAULT_LIMIT + "...[100 more characters]"
    assert printable("abcdef", 3) == "abc...[3 more characters]"
    assert printable("abc", 3) == "abc"


def test_a_megabyte_is_one_bounded_line() -> None:
    text = ("\n\x1b[31m" * 200_000)[: 1 << 20]
    out = printable(text)
    assert out.endswith(f"...[{len(text) - DEFAULT_LIMIT} more characters]")
    assert "\n" not in out and "\x1b" not in out
    assert len(out) < 10 * DEFAULT_LIMIT


def test_bytes_are_read_as_utf8_and_counted_in_bytes() -> None:
    assert printable(b"caf\xc3\xa9\n") == "café\\n"
    assert printable(b"bad\xff") == "bad\\udcff"
    assert printable(b"y" * 10, 4) == "yyyy...[6 more bytes]"
    assert printable(memoryview(b"\x1b[0m")) == "\\x1b[0m"


def test_other_objects_are_their_str_and_a_broken_str_is_named() -> None:
    class Broken:
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert printable(ValueError("bad\nvalue")) == "bad\\nvalue"
    assert printable(42) == "42"
    assert printable(Broken()) == "<str() of a Broken failed: RuntimeError>"


@given(st.text(), st.integers(min_value=1, max_value=500))
def test_output_is_one_printable_bounded_line_for_any_text(text: str, limit: int) -> None:
    out = printable(text, limit)
    assert out.isprintable()
    assert len(out) <= limit * 10 + 40  # each kept character is at most a 10-character escape, plus marker
    if text.isprintable() and len(text) <= limit:
        assert out == text
