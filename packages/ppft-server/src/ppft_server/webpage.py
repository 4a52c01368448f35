"""ppserver's status page from its command line: the `--http` settings checked, and the page's server bound.

`cli` calls these before the ppserver serves; the page's thread (`ppft_worker.observe.StatusServer`) only
reads the ppserver's snapshot (`status.server_status`) and never touches its loop.
"""

from __future__ import annotations

from typing import Any

from ppft_worker.observe import ExposureError, check_exposure, parse_http_address
from ppft_worker.runtime import read_secret_file

from .settings import Settings, UsageError

__all__ = ["http_settings", "status_page"]


def http_settings(settings: Settings) -> tuple[str, int, str | None, bool] | None:
    """(host, port, token, public) of the status page the settings ask for; None without `--http`.
    `UsageError` for a bad address, or one other machines can reach with neither a token nor --http-public."""
    if settings.http is None:
        return None
    token = settings.http_token
    if settings.http_token_file is not None:
        try:
            token = read_secret_file(settings.http_token_file).decode("utf-8").strip()
        except UnicodeDecodeError:
            raise UsageError(f"--http-token-file {settings.http_token_file} is not UTF-8 text") from None
    try:
        host, port = parse_http_address(settings.http)
        check_exposure(host, token, settings.http_public, f"--http {settings.http}")
    except ExposureError as exc:
        raise UsageError(str(exc)) from None
    return host, port, token, settings.http_public


def status_page(server: Any, host: str, port: int, token: str | None, public: bool) -> Any:
    """The ppserver's `StatusServer`, bound (its thread not started yet); or the error message."""
    from ppft_worker.observe import StatusServer  # noqa: PLC0415 - only --http needs the web side

    from .status import server_status  # noqa: PLC0415

    page = StatusServer(host, port, lambda: server_status(server), token=token, public=public)
    try:
        page.bind()
    except OSError as exc:
        shown = f"[{host}]" if ":" in host else host
        return (
            f"cannot serve the status page on {shown}:{port}: {exc.strerror or exc}; choose another "
            f"--http port, or check the address"
        )
    server.status_page = page.url
    return page
