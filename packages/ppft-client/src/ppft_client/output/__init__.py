"""Jobs' output on the caller's side: a job's text replayed on the caller's streams (`replay`), and live
output as jobs write it (`live`). It imports nothing of the client but itself; its names are loaded on first
use.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .live import LivePrinter, LiveView, format_live
    from .replay import Unshown, segments, write_output

__all__ = [
    "LivePrinter",
    "LiveView",
    "Unshown",
    "format_live",
    "segments",
    "write_output",
]

_HOMES = {
    "LivePrinter": "live",
    "LiveView": "live",
    "format_live": "live",
    "Unshown": "replay",
    "segments": "replay",
    "write_output": "replay",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(__import__(f"{__name__}.{home}", fromlist=[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
