"""`python -m ppft.tests [ncpus]`: run every classic example in its own process; exit 1 if any failed.

Each example runs as `python -m ppft.tests.NAME`, with a deadline, its output shown as it comes. A line per
example says whether it passed.
"""

from __future__ import annotations

import subprocess
import sys
import time

from ppft.tests import EXAMPLES

DEADLINE = 60.0
"""Seconds an example may take before it counts as failed (each takes well under 5 s)."""


def main(argv: list[str]) -> int:
    failed: list[str] = []
    started = time.monotonic()
    for name in EXAMPLES:
        begin = time.monotonic()
        try:
            code = subprocess.run(
                [sys.executable, "-m", f"ppft.tests.{name}", *argv], timeout=DEADLINE, check=False
            ).returncode
        except subprocess.TimeoutExpired:
            code = -1
            print(f"FAIL {name}: no answer within {DEADLINE:.0f} s", flush=True)
        if code != 0:
            failed.append(name)
        print(f"{'ok  ' if code == 0 else 'FAIL'} {name} ({time.monotonic() - begin:.1f} s)", flush=True)
    total = time.monotonic() - started
    if failed:
        print(f"{len(failed)} of {len(EXAMPLES)} examples failed: {', '.join(failed)} ({total:.1f} s)")
        return 1
    print(f"all {len(EXAMPLES)} examples passed ({total:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
