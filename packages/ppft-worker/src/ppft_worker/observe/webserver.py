"""`StatusServer`: the status page, `/status.json` and `/metrics`, served from a thread of its own.

    browser / Prometheus --HTTP GET--> StatusServer thread ("ppft-status", a short-lived thread per request,
        at most MAX_REQUESTS at once) --snapshot()--> reads the owner's counters and records, lock-free
        --> "/" page.html (static) | "/status.json" JSON | "/metrics" Prometheus text

It never calls into the owner's loop: `snapshot` reads plain counters the I/O thread keeps (`counters`) and
the pool's records, and one snapshot serves every request of the next `CACHE_SECONDS`, so ten open pages and
a scraper cost what one does. When nobody asks, the thread sleeps in `select`.

Rules (`exposure`): read-only (GET and HEAD; anything else 405); a token, when set, is checked on every
request in constant time (`Authorization: Bearer TOKEN`, or `?token=TOKEN` for a browser); without a token a
page on loopback answers only requests addressed to an IP address or `localhost`, so a web page elsewhere
cannot read it through a DNS name rebound to 127.0.0.1. The page shows everything as text (never as HTML),
and its Content-Security-Policy allows no script but its own. Nothing here shows a secret, a function's
source or an argument's value: the snapshot holds none.

A failing snapshot answers 500 and is logged once a minute at most; the thread goes on.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.resources
import ipaddress
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .metrics import CONTENT_TYPE, render_metrics

__all__ = ["CACHE_SECONDS", "MAX_REQUESTS", "StatusServer", "page_html"]

log = logging.getLogger("ppft.status")

CACHE_SECONDS = 0.25
"""A snapshot answers every request that arrives within this many seconds of it."""

MAX_REQUESTS = 16
"""Requests served at once; one more is answered 503 at once (a slow or stalled reader holds one place)."""

REQUEST_TIMEOUT = 10.0
"""Seconds a connection may take to send its request before it is closed."""

_page_cache: tuple[bytes, str] | None = None


def page_html() -> tuple[bytes, str]:
    """The page (package data `page.html`) and its Content-Security-Policy, which admits only the page's own
    inline script and style (by their SHA-256)."""
    global _page_cache
    if _page_cache is None:
        text = importlib.resources.files(__package__).joinpath("page.html").read_text("utf-8")
        hashes = []
        for tag in ("script", "style"):
            match = re.search(rf"<{tag}>(.*?)</{tag}>", text, re.S)
            assert match is not None, f"page.html has no <{tag}>"
            digest = hashlib.sha256(match.group(1).encode("utf-8")).digest()
            hashes.append(f"'sha256-{base64.b64encode(digest).decode('ascii')}'")
        policy = (
            f"default-src 'none'; script-src {hashes[0]}; style-src {hashes[1]}; connect-src 'self'; "
            f"img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )
        _page_cache = (text.encode("utf-8"), policy)
    return _page_cache


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def _ip_or_localhost(host_header: str) -> bool:
    """Whether an HTTP Host header names an IP address or localhost (a port may follow)."""
    host = host_header.strip()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    if host.lower() == "localhost":
        return True
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], owner: StatusServer) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.owner = owner
        self.places = threading.BoundedSemaphore(MAX_REQUESTS)
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.places.acquire(blocking=False):
            try:
                request.sendall(
                    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                    b"Connection: close\r\n\r\ntoo many requests at once; try again\n"
                )
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.places.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("status page: a request from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    timeout = REQUEST_TIMEOUT
    server_version = "ppft-status"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("status page: %s %s", self.address_string(), format % args)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_GET(self) -> None:
        self._answer(head=False)

    def _refuse_method(self) -> None:
        self._send(405, b"read-only: only GET and HEAD are answered\n", "text/plain; charset=utf-8",
                   {"Allow": "GET, HEAD"})  # fmt: skip

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _refuse_method

    def _answer(self, head: bool) -> None:
        owner = self.server.owner
        url = urlsplit(self.path)
        problem = owner.refusal(self.headers.get("Authorization"), url.query, self.headers.get("Host"))
        if problem is not None:
            status, text = problem
            extra = {"WWW-Authenticate": 'Bearer realm="ppft status"'} if status == 401 else {}
            self._send(status, text.encode("utf-8") + b"\n", "text/plain; charset=utf-8", extra, head)
            return
        path = url.path
        try:
            if path in ("/", "/index.html"):
                body, policy = page_html()
                self._send(200, body, "text/html; charset=utf-8", {"Content-Security-Policy": policy}, head)
            elif path == "/status.json":
                body = json.dumps(owner.snapshot(), separators=(",", ":"), allow_nan=False).encode("ascii")
                self._send(200, body, "application/json", None, head)
            elif path == "/metrics":
                self._send(200, render_metrics(owner.snapshot()).encode("utf-8"), CONTENT_TYPE, None, head)
            elif path == "/favicon.ico":
                self._send(204, b"", "image/x-icon", None, head)
            else:
                self._send(404, b"not found: this page serves /, /status.json and /metrics\n",
                           "text/plain; charset=utf-8", None, head)  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - a failing snapshot answers 500; the thread goes on
            owner.failed(exc)
            self._send(500, f"the status could not be read: {type(exc).__name__}\n".encode(),
                       "text/plain; charset=utf-8", None, head)  # fmt: skip

    def _send(
        self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None,
        head: bool = False,
    ) -> None:  # fmt: skip
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head and body:
            self.wfile.write(body)


class StatusServer:
    """Serves `snapshot()` (a JSON-able dict, `docs/cluster.md` lists its fields) as a page, JSON and
    Prometheus metrics on `(host, port)`, from a daemon thread. `token`: required on every request (None:
    none); `public`: the caller decided that anyone who reaches a non-loopback address may read it
    (`exposure.check_exposure` is the caller's to apply, with its own words)."""

    def __init__(
        self, host: str, port: int, snapshot: Callable[[], dict[str, Any]], *, token: str | None = None,
        public: bool = False,
    ) -> None:  # fmt: skip
        self.host = host
        self.port = port
        self.token = token
        self.public = public
        self._token_digest = _digest(token) if token is not None else None
        self._snapshot = snapshot
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._cache_lock = threading.Lock()  # among HTTP threads only: the owner's thread never takes it
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._last_failure_log = -1e9

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def url(self) -> str:
        """The page's address: `http://HOST:PORT/` (an unspecified HOST shown as it was given)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def bind(self) -> None:
        """Take the address now (an `OSError` if it cannot be had); `start` serves it."""
        if self._httpd is None:
            self._httpd = _HTTPServer((self.host, self.port), self)
            self.port = int(self._httpd.server_address[1])

    def start(self) -> None:
        """Serve from a daemon thread (binding first, if `bind` was not called)."""
        self.bind()
        assert self._httpd is not None
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.5}, name="ppft-status",
                daemon=True,
            )  # fmt: skip
            self._thread.start()

    def close(self) -> None:
        """Stop serving and release the port (waits for the thread, at most a second). Idempotent."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        if self._thread is not None:
            httpd.shutdown()  # returns once serve_forever has: never call it when it never ran
            self._thread.join(1.0)
        httpd.server_close()

    # -- for the request handlers ----------------------------------------------------------------------

    def refusal(
        self, authorization: str | None, query: str, host_header: str | None
    ) -> tuple[int, str] | None:
        """Why a request is refused, as (status, text); None when it may be answered."""
        if self._token_digest is not None:
            given = None
            if authorization and authorization[:7].lower() == "bearer ":
                given = authorization[7:].strip()
            elif query:
                values = parse_qs(query).get("token")
                given = values[0] if values else None
            # compared as SHA-256 digests: equal lengths, constant time whatever was sent
            if given is None or not hmac.compare_digest(_digest(given), self._token_digest):
                return 401, (
                    "this status page needs its token: open it as URL?token=TOKEN, or send the header "
                    "'Authorization: Bearer TOKEN' (Prometheus: authorization: credentials: TOKEN)"
                )
            return None
        if not self.public and (host_header is None or not _ip_or_localhost(host_header)):
            return 403, (
                "this status page answers only requests addressed to an IP address or localhost (a name "
                "that resolves to this machine may be a web page's trick to read it); give it a token "
                "(--http-token) or make it public (--http-public) to reach it by name"
            )
        return None

    def snapshot(self) -> dict[str, Any]:
        """The owner's snapshot, taken at most every `CACHE_SECONDS` whoever asks."""
        now = time.monotonic()
        with self._cache_lock:
            cached = self._cached
            if cached is None or now - cached[0] >= CACHE_SECONDS:
                cached = self._cached = (time.monotonic(), self._snapshot())
            return cached[1]

    def failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_failure_log >= 60.0:
            self._last_failure_log = now
            log.error("the status page could not read the status: %s: %s", type(exc).__name__, exc,
                      exc_info=exc)  # fmt: skip
