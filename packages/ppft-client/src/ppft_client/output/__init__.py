"""Jobs' output on the caller's side: a job's text replayed on the caller's streams (`replay`), and live
output as jobs write it (`live`). It imports nothing of the client but itself.
"""

from __future__ import annotations

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
