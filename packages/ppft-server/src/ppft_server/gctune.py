"""The garbage collector's pace while a ppserver serves: fewer collections of a heap of queued jobs.

Called by `node.NodeServer` when it starts and stops serving; it only sets `gc`'s thresholds, under a lock,
counting the servers of the process, and never collects anything itself.
"""

from __future__ import annotations

import gc
import threading

__all__ = ["collect_less"]

_GC_THRESHOLD = 10_000
_gc_lock = threading.Lock()
_gc_serving = 0  # servers running in this process
_gc_default = gc.get_threshold()


def collect_less(serving: bool) -> None:
    """Raise the collector's first threshold while a server runs in this process; restore it after the last.

    Every queued job holds a few objects for a short while, and a steady stream frees about as many as it
    makes. The default threshold (700 objects more made than freed) still set the collector off every few
    hundred tiny jobs, with a walk of the whole heap every few thousand: a large share of ppserver's time
    under tiny jobs (`scripts/bench --only remote`). 10,000 is reached by bursts only; nothing here depends on
    cycles being collected soon."""
    global _gc_serving, _gc_default
    with _gc_lock:
        if serving:
            _gc_serving += 1
            if _gc_serving == 1:
                _gc_default = gc.get_threshold()
                gc.set_threshold(max(_gc_default[0], _GC_THRESHOLD), *_gc_default[1:])
        else:
            _gc_serving -= 1
            if _gc_serving == 0:
                gc.set_threshold(*_gc_default)
