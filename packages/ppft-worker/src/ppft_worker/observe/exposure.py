"""Where a status page may listen, and who may read it: `parse_http_address`, `check_exposure`.

The page shows no secret, no function source and no argument value, but it does show what runs where (worker
pids, function names, client addresses): on a shared network that is worth a password. So a page listens on
loopback unless told otherwise, and one on any other address needs a token (`--http-token`), or an explicit
`--http-public` that says anyone who reaches the address may read it.

This module only decides: it opens no socket.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ..runtime import is_loopback

__all__ = [
    "DEFAULT_HTTP_HOST",
    "ExposureError",
    "check_exposure",
    "is_loopback_host",
    "page_link",
    "parse_http_address",
]

DEFAULT_HTTP_HOST = "127.0.0.1"


class ExposureError(ValueError):
    """A status page address that cannot be used as given (bad syntax, or open to others with no token)."""


def parse_http_address(text: str, what: str = "--http") -> tuple[str, int]:
    """`[HOST:]PORT` (HOST an IPv4 address, a name, or an IPv6 address in brackets) as (host, port); the
    host defaults to 127.0.0.1. `ExposureError` naming `what` for anything else."""
    text = str(text).strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = DEFAULT_HTTP_HOST, text
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ExposureError(f"{what} {text!r}: write an IPv6 address in brackets, as [::1]:8080")
    if not host:
        raise ExposureError(f"{what} {text!r}: the host before ':' is empty; write PORT, or HOST:PORT")
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ExposureError(
            f"{what} {text!r}: {port_text!r} is not a port number (0-65535); write PORT or HOST:PORT"
        )
    return host, port


def is_loopback_host(host: str) -> bool:
    """Whether `host` names this machine's loopback only: a loopback address, or "localhost"."""
    return host.lower() == "localhost" or is_loopback(host)


def check_exposure(
    host: str,
    token: str | None,
    public: bool,
    what: str = "--http",
    options: tuple[str, str] = ("--http-token TOKEN", "--http-public"),
) -> None:
    """`ExposureError` when a page on `host` would be open to other machines without `token` or `public`
    (`options`: how the caller spells those two, for the message)."""
    if token is not None and not token:
        raise ExposureError("the status page token is empty: give a token of at least 16 characters")
    if token is not None and len(token) < 16:
        raise ExposureError(
            "the status page token is too short to protect anything: give one of at least 16 characters "
            "(python -c 'import secrets; print(secrets.token_urlsafe())' makes one)"
        )
    if is_loopback_host(host) or token is not None or public:
        return
    raise ExposureError(
        f"{what}: a status page on {host}, an address other machines can reach, needs {options[0]} "
        f"(every request must carry it) or {options[1]} (anyone who reaches it may read it); or serve it on "
        f"127.0.0.1 (the default) and reach it through an ssh tunnel"
    )


def page_link(page: str, connected_host: str) -> str:
    """The link to show for a peer's status page, which the peer announced as `page` (`NodeInfo.page`,
    peer text): "" unless it is a plain `http(s)://HOST:PORT/...` address; an unspecified HOST (0.0.0.0,
    ::) becomes `connected_host`, the address this side reached the peer by."""
    if not page or len(page) > 300 or not page.isprintable() or any(c in page for c in " <>\"'`"):
        return ""
    try:
        url = urlsplit(page)
        port = url.port
    except ValueError:
        return ""
    host = url.hostname
    if url.scheme not in ("http", "https") or host is None or port is None or url.username or url.password:
        return ""
    if host in ("0.0.0.0", "::"):
        host = connected_host
    shown = f"[{host}]" if ":" in host else host
    return f"{url.scheme}://{shown}:{port}{url.path or '/'}"
