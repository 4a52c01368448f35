"""The docs checker: every code block of docs/*.md and README.md that claims an output is run and compared.

How a page marks what runs (saved files, `$ ` transcripts, doctests, background servers, ports, `<!-- not
run: reason -->`) is told in tests/docslib.py. Each page is one test, in a fresh temporary folder, so pages
run in parallel (pytest-xdist); a failure shows the block, what the page expects and what really came out.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import docslib
from docslib import Block, DocsFailure, output_matches, parse_page, run_page

PAGES = list(docslib.pages())


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_does_what_it_says(page: Path, tmp_path: Path) -> None:
    try:
        run_page(page, tmp_path)
    except DocsFailure as exc:
        failure = str(exc)
    else:
        return
    pytest.fail(failure, pytrace=False)


def test_every_not_run_mark_gives_its_reason() -> None:
    for page in PAGES:
        for block in parse_page(page):
            if block.not_run is not None:
                assert len(block.not_run) >= 10, f"{block.where}: `<!-- not run: REASON -->` needs a reason"


# -- the checker itself ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expected", "actual", "ok"),
    [
        (["a", "b"], ["a", "b"], True),
        (["a", "b"], ["a", "c"], False),
        (["a"], ["a", "b"], False),
        (["a", "b"], ["a"], False),
        (["took ... s"], ["took 0.25 s"], True),
        (["took ... s"], ["took 0.25 ms"], False),
        (["... | local"], ["    4 |  100.00 | local"], True),
        (["a", "...", "z"], ["a", "z"], True),
        (["a", "...", "z"], ["a", "b", "c", "z"], True),
        (["a", "...", "z"], ["a", "b", "c"], False),
        (["...", "last"], ["x", "y", "last"], True),
        (["a", "..."], ["a"], True),
        (["a  "], ["a", "", ""], True),  # trailing spaces and blank lines do not count
        (["a", "", "b"], ["a", "b"], False),  # blank lines inside do
        (["(1+1)*2 [x]"], ["(1+1)*2 [x]"], True),  # no regex in the expected text
        (["(1+1)*2 [x]"], ["11*2 x"], False),
    ],
)
def test_output_matching(expected: list[str], actual: list[str], ok: bool) -> None:
    assert output_matches(expected, actual) is ok


PAGE = """\
# A page

Save this as `hello.py`:

```python
print("hello on port 35000")
```

```text
$ python hello.py
hello on port 35000
$ echo $((1 + 1)); echo oops >&2
2
oops
```

<!-- not run: it would hang -->
```sh
ppserver -p 35001
```

```python
x = [1, 2
```
"""


def test_a_page_is_parsed_into_its_blocks(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(PAGE)
    blocks = parse_page(page)
    assert [(b.line, b.lang) for b in blocks] == [(5, "python"), (9, "text"), (18, "sh"), (22, "python")]
    saved, transcript, not_run, broken = blocks
    assert saved.save_as == "hello.py" and not saved.is_transcript
    assert transcript.is_transcript and transcript.save_as is None
    assert not_run.not_run == "it would hang" and not_run.server_commands == ["ppserver -p 35001"]
    assert broken.not_run is None


def test_a_page_runs_with_its_ports_mapped_and_stops_at_bad_python(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(PAGE)
    with pytest.raises(DocsFailure, match=r"page.md:22: the python block is not valid Python"):
        run_page(page, tmp_path)
    saved = (tmp_path / "hello.py").read_text()
    assert "35000" not in saved  # the docs' port became a free one, and back to 35000 in the output


def test_a_wrong_output_is_shown_with_the_block_the_expected_and_the_actual(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```text\n$ echo one; echo two\none\nthree\n```\n")
    with pytest.raises(DocsFailure) as info:
        run_page(page, tmp_path)
    message = str(info.value)
    assert message.startswith("page.md:1: `$ echo one; echo two` does not print what the page says")
    assert "--- the block\n$ echo one; echo two\none\nthree\n" in message
    assert "--- expected\none\nthree\n--- actual\none\ntwo\n" in message


def test_a_server_block_starts_before_the_next_transcript_and_ends_with_the_page(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```sh\nppserver -p 35000 -i 127.0.0.1 -w 1     # a comment\n```\n\n"
        "Save this as `one.py`:\n\n```python\nimport ppft as pp\n\n"
        "with pp.Server(0, ppservers=('127.0.0.1:35000',)) as s:\n"
        "    print(s.submit(abs, (-3,))())\n    print(s.get_active_nodes())\n```\n\n"
        "```text\n$ python one.py\n3\n{'local': 0, '127.0.0.1:35000': 1}\n```\n"
    )
    run = docslib.PageRun(tmp_path)
    try:
        for block in parse_page(page):
            run.run(block)
        ((server, _, _),) = run.servers
        assert server.poll() is None
    finally:
        run.close()
    assert server.poll() is not None


def test_a_doctest_block_runs_in_the_pages_folder(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "Save this as `mod.py`:\n\n```python\nX = 41\n```\n\n"
        "```python\n>>> import mod\n>>> mod.X + 1\n42\n>>> print('took 0.25 s')\ntook ... s\n```\n"
    )
    assert run_page(page, tmp_path)[-1].startswith("page.md:7 ran $ python -m doctest")
    page.write_text(page.read_text().replace("42\n", "43\n"))
    with pytest.raises(DocsFailure, match=r"(?s)page.md:7: .*Expected:\s+43\s+Got:\s+42"):
        run_page(page, tmp_path)


def test_blocks_of_the_docs_are_found() -> None:
    """The checker reads the pages it should: each has blocks, and the quickstart's transcripts are seen."""
    quickstart = parse_page(docslib.ROOT / "docs" / "quickstart.md")
    assert any(b.is_transcript for b in quickstart)
    assert all(isinstance(b, Block) for b in quickstart)
