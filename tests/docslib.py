"""The docs checker's machinery: read a Markdown page's code blocks, run what claims an output, compare.

Imported by tests as `docslib` (the root pyproject puts tests/ on the path); `tests/test_docs.py` runs every
page of docs/ and README.md through it. What a page writes, and what the checker does with it:

* A paragraph "Save this as `NAME`:" before a code block: the block is saved as NAME in the page's folder
  (a fresh temporary folder per page), whatever its language.
* A ```text (or ```console) block whose first line starts with `$ `: a transcript. Each `$ ` line is a
  command (a trailing `\\` continues it on the next line), run with bash in the page's folder, the
  project's venv first on PATH; the lines up to the next `$ ` are what it prints, stdout and stderr
  together as a terminal shows them (Python unbuffered). Matching is line by line: `...` inside a line
  matches any text, a line that is only `...` matches any number of lines; trailing spaces and trailing
  blank lines do not count.
* A block whose first line starts with `>>> `: a doctest, run in its own interpreter in the page's folder
  (`...` matches any text, as in transcripts).
* A ```sh or ```bash block whose every command starts a server (`ppserver ...`, `ppft-worker --connect ...`,
  or the same as `python -m ppft_server` / `python -m ppft_worker`): started in the background, before the
  next transcript or doctest of the page that comes after it (a page with no such thing never starts it),
  and ended by PID when the page is done. A ppserver is waited for until its port listens.
* The fixed ports of the docs (35000 to 35099) become free ports of this machine, the same one for the same
  port everywhere on a page: in saved files, in commands, and back in the output before it is compared.
  Every command of a page gets the same fresh secret in PPFT_SECRET, and HOME is the page's own folder.
* `<!-- not run: REASON -->` on the line before a block: the block is neither run nor saved. Use it
  sparingly, for a block that cannot run here (a production path, another machine), always with the
  reason.
* Other ```python blocks are checked for syntax only (a signature written as a call, `f(a, *, b=1)`,
  as a def's parameters). Other blocks (ini, diagrams, sh with other commands)
  claim no output and are left alone.
"""

from __future__ import annotations

import ast
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from clusterlib import free_port, listening

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
COMMAND_TIMEOUT = 120.0
"""Seconds one transcript command or doctest may take."""
SERVER_START_TIMEOUT = 30.0

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[\w+.-]*)")
_SAVE = re.compile(r"[Ss]ave (?:this|it) as `(?P<name>[^`/]+)`")
_NOT_RUN = re.compile(r"^\s*<!--\s*not run:\s*(?P<reason>.*?)\s*-->\s*$")
_DOC_PORT = re.compile(r"(?<![\d.])350\d\d(?!\d)")
_SERVER = re.compile(r"^(?:ppserver|ppft-worker|python3? -m ppft_(?:server|worker))(?:\s|$)")
_PORT_FLAG = re.compile(r"(?:^|\s)(?:-p|--port)[ =](?P<port>\d+)")
_TRANSCRIPT_LANGS = ("text", "console", "shell-session", "")
_SERVER_LANGS = ("sh", "bash", "shell", "console")


@dataclass
class Block:
    """One fenced code block of a page."""

    page: str
    line: int  # of the opening fence, 1-based
    lang: str
    text: str  # the body, without the indentation of its fence
    before: str  # the paragraph just before it
    not_run: str | None = None  # the reason given in `<!-- not run: ... -->`

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def save_as(self) -> str | None:
        m = _SAVE.search(self.before)
        return m.group("name") if m else None

    @property
    def lines(self) -> list[str]:
        return self.text.splitlines()

    @property
    def is_transcript(self) -> bool:
        return self.lang in _TRANSCRIPT_LANGS and bool(self.lines) and self.lines[0].startswith("$ ")

    @property
    def is_doctest(self) -> bool:
        return bool(self.lines) and self.lines[0].startswith(">>> ")

    @property
    def server_commands(self) -> list[str]:
        """The commands of a block that only starts servers; [] for any other block."""
        if self.lang not in _SERVER_LANGS or self.save_as or self.is_transcript:
            return []
        commands = [_strip_comment(line) for line in _joined(self.lines)]
        commands = [c for c in commands if c]
        if commands and all(_SERVER.match(c) for c in commands):
            return [c.removesuffix("&").rstrip() for c in commands]
        return []


def parse_page(path: Path) -> list[Block]:
    """Every fenced code block of the Markdown file `path`, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    name = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence = len(m.group("indent")), m.group("fence")
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not re.match(
            rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$", lines[i]
        ):
            line = lines[i]
            body.append(line[min(indent, len(line) - len(line.lstrip())) :])
            i += 1
        i += 1
        prev = start - 1
        while prev >= 0 and not lines[prev].strip():
            prev -= 1
        not_run = None
        if prev >= 0 and (nr := _NOT_RUN.match(lines[prev])):
            not_run = nr.group("reason")
            prev -= 1
            while prev >= 0 and not lines[prev].strip():
                prev -= 1
        paragraph: list[str] = []
        while prev >= 0 and lines[prev].strip() and not _FENCE.match(lines[prev]):
            paragraph.insert(0, lines[prev].strip())
            prev -= 1
        blocks.append(Block(name, start + 1, m.group("lang"), "\n".join(body), " ".join(paragraph), not_run))
    return blocks


def _joined(lines: list[str]) -> list[str]:
    """Lines with their `\\` continuations joined."""
    out: list[str] = []
    pending = ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
        else:
            out.append(pending + line)
            pending = ""
    if pending:
        out.append(pending)
    return out


def _strip_comment(command: str) -> str:
    """`command` without a trailing `# comment` (a `#` after whitespace, outside quotes)."""
    quote = ""
    for k, ch in enumerate(command):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (k == 0 or command[k - 1].isspace()):
            return command[:k].rstrip()
    return command.strip()


# -- matching ----------------------------------------------------------------------------------------------


def _line_pattern(expected: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in expected.split("...")), re.DOTALL)


def _clean(lines: list[str]) -> list[str]:
    out = [line.rstrip() for line in lines]
    while out and not out[-1]:
        out.pop()
    return out


def output_matches(expected: list[str], actual: list[str]) -> bool:
    """Whether `actual` lines are what `expected` describes: `...` in a line is any text; a line of only
    `...` is any number of lines (none included); trailing spaces and blank lines at the end do not count."""
    want, got = _clean(expected), _clean(actual)
    patterns = [None if w.strip() == "..." else _line_pattern(w) for w in want]
    memo: dict[tuple[int, int], bool] = {}

    def match(i: int, j: int) -> bool:
        key = (i, j)
        if key in memo:
            return memo[key]
        if i == len(want):
            ok = j == len(got)
        elif patterns[i] is None:
            ok = match(i + 1, j) or (j < len(got) and match(i, j + 1))
        else:
            pattern = patterns[i]
            assert pattern is not None
            ok = j < len(got) and pattern.fullmatch(got[j]) is not None and match(i + 1, j + 1)
        memo[key] = ok
        return ok

    return match(0, 0)


# -- running a page ----------------------------------------------------------------------------------------


@dataclass
class Command:
    """One `$ ` command of a transcript and the output it claims."""

    line: str
    expected: list[str]


def transcript_commands(block: Block) -> list[Command]:
    commands: list[Command] = []
    lines = block.lines
    k = 0
    while k < len(lines):
        command = lines[k][2:]
        k += 1
        while command.rstrip().endswith("\\") and k < len(lines):
            command = command.rstrip()[:-1] + " " + lines[k].strip()
            k += 1
        expected: list[str] = []
        while k < len(lines) and not lines[k].startswith("$ "):
            expected.append(lines[k])
            k += 1
        commands.append(Command(command, expected))
    return commands


class DocsFailure(AssertionError):
    """A block did not do what its page says."""


@dataclass
class PageRun:
    """One page run in its own folder: saved files, background servers, transcripts, doctests."""

    folder: Path
    ports: dict[str, int] = field(default_factory=dict)
    servers: list[tuple[subprocess.Popen[bytes], Path, str]] = field(default_factory=list)
    pending: list[Block] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)  # what was run, for the test to report

    def __post_init__(self) -> None:
        home = self.folder / "home"
        home.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PPFT_", "PPSERVER", "PYTEST_"))}
        env.update(
            PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
            PPFT_SECRET=secrets.token_hex(16),
            HOME=str(home),
            PYTHONUNBUFFERED="1",
            PYTHONDONTWRITEBYTECODE="1",
            COLUMNS="80",
            VIRTUAL_ENV=str(VENV_BIN.parent),
        )
        self.env = env

    # ports: the docs' fixed ports, and free ones here

    def map_ports(self, text: str) -> str:
        def port(m: re.Match[str]) -> str:
            doc = m.group(0)
            if doc not in self.ports:
                self.ports[doc] = free_port()
            return str(self.ports[doc])

        return _DOC_PORT.sub(port, text)

    def unmap_ports(self, text: str) -> str:
        for doc, real in self.ports.items():
            text = re.sub(rf"(?<![\d.]){real}(?!\d)", doc, text)
        return text

    # blocks

    def run(self, block: Block) -> None:
        if block.not_run is not None:
            return
        name = block.save_as
        if name is not None:
            (self.folder / name).write_text(self.map_ports(block.text) + "\n", encoding="utf-8")
            self.ran.append(f"{block.where} saved {name}")
        elif block.server_commands:
            self.pending.append(block)
        elif block.is_transcript:
            self.start_pending()
            for command in transcript_commands(block):
                self.run_command(block, command)
        elif block.is_doctest:
            self.start_pending()
            self.run_doctest(block)
        elif block.lang == "python":
            try:
                _parse_python(block.text)
            except SyntaxError as exc:
                raise DocsFailure(
                    f"{block.where}: the python block is not valid Python: {exc}\n{block.text}"
                ) from None

    def start_pending(self) -> None:
        for block in self.pending:
            for command in block.server_commands:
                self.start_server(block, command)
        self.pending.clear()

    def start_server(self, block: Block, command: str) -> None:
        real = self.map_ports(command)
        log = self.folder / f"server-{len(self.servers)}.log"
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                ["bash", "-c", f"exec {real}"], cwd=self.folder, env=self.env, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.servers.append((popen, log, command))
        self.ran.append(f"{block.where} started {command}")
        port = _PORT_FLAG.search(real)
        if command.startswith(("ppserver", "python -m ppft_server", "python3 -m ppft_server")):
            wanted = int(port.group("port")) if port else 60000
            deadline = time.monotonic() + SERVER_START_TIMEOUT
            while not listening(wanted):
                if popen.poll() is not None or time.monotonic() > deadline:
                    raise DocsFailure(
                        f"{block.where}: the server `{command}` did not start listening on {wanted} "
                        f"(exit status {popen.poll()}):\n{log.read_text(errors='replace')}"
                    )
                time.sleep(0.02)

    def run_command(self, block: Block, command: Command) -> None:
        real = self.map_ports(command.line)
        proc = subprocess.Popen(
            ["bash", "-c", real], cwd=self.folder, env=self.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            out, _ = proc.communicate(timeout=COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            out, _ = proc.communicate(timeout=10)
            self.fail(block, command, out, f"ran over {COMMAND_TIMEOUT:.0f} s")
        finally:
            _kill_group(proc.pid)  # whatever the command left behind
        self.ran.append(f"{block.where} ran $ {command.line}")
        actual = self.unmap_ports(out.decode("utf-8", errors="replace"))
        if not output_matches(command.expected, actual.splitlines()):
            self.fail(block, command, out, f"exit status {proc.returncode}")

    def run_doctest(self, block: Block) -> None:
        path = self.folder / f"doctest-{block.line}.txt"
        path.write_text(self.map_ports(block.text) + "\n", encoding="utf-8")
        command = Command(f"python -m doctest -o ELLIPSIS {path.name}", [])
        self.run_command(block, command)

    def fail(self, block: Block, command: Command, out: bytes, status: str) -> None:
        actual = self.unmap_ports(out.decode("utf-8", errors="replace")).rstrip("\n")
        servers = "".join(
            f"\n--- log of `{cmd}`\n{log.read_text(errors='replace')}" for _, log, cmd in self.servers
        )
        raise DocsFailure(
            f"{block.where}: `$ {command.line}` does not print what the page says ({status})\n"
            f"--- the block\n{block.text}\n"
            f"--- expected\n" + "\n".join(command.expected) + "\n"
            f"--- actual\n{actual}\n" + servers
        )

    def close(self) -> None:
        """End every server this page started, by PID: SIGTERM, then SIGKILL of its process group."""
        for popen, _, _ in self.servers:
            if popen.poll() is None:
                os.kill(popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for popen, _, _ in self.servers:
            try:
                popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _kill_group(popen.pid)
            if popen.poll() is None:
                popen.wait(10)


_SIGNATURE = re.compile(r"^\s*[\w.]+\((?P<params>.*)\)\s*(?:->.*)?$", re.DOTALL)


def _parse_python(text: str) -> None:
    """Parse `text` as Python; a signature written as a call (`f(a, *, b=1)`) is read as a def's
    parameters. Raises SyntaxError."""
    try:
        ast.parse(text)
    except SyntaxError:
        m = _SIGNATURE.match(text)
        if m is None:
            raise
        ast.parse(f"def _({m.group('params')}): pass")


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def pages() -> Iterator[Path]:
    """The pages the checker reads: docs/*.md and README.md."""
    yield from sorted((ROOT / "docs").glob("*.md"))
    yield ROOT / "README.md"


def run_page(path: Path, folder: Path) -> list[str]:
    """Run every block of `path` that claims an output, in `folder`; raises `DocsFailure` at the first
    block that does not do what the page says. Returns what was run."""
    page = PageRun(folder)
    try:
        for block in parse_page(path):
            page.run(block)
    finally:
        page.close()
    return page.ran
