"""`python -m ppft_worker` and the `ppft-worker` command: which of the package's programs this process runs.

* Started by a `WorkerPool` (its secret in PPFT_WORKER_SECRET, no argument): the worker process,
  `ppft_worker.process.main`. (A pool starts that entry directly, without this module: see
  `ppft_worker.pool.spawn`.)
* `--stdio`: the remote side of an ssh node (`ppft_worker.stdio`), started by a ppft client over ssh.
* Anything else is a person at the command line: `--connect HOST:PORT ...` runs a dial-in worker
  (`ppft_worker.dialin`), whose help says what ppft-worker is for; a bare `ppft-worker` gets its usage.

This module sits above everything it dispatches to and is imported by none of it (`ppft_worker.main` and
`ppft.worker.main` name its `main`). It loads the dial-in worker's modules only for a dial-in worker, so the
worker process pays nothing for them, and it is the one module it adds to the worker's start-up.
"""

from __future__ import annotations

import os
import sys

from .process import EXIT_PROTOCOL, SECRET_ENV
from .process import main as worker_main

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of `ppft-worker` and `python -m ppft_worker`; returns the process exit code."""
    args = sys.argv[1:] if argv is None else argv
    if not args and SECRET_ENV in os.environ:
        return worker_main()  # a pool always passes its secret and no argument
    if "--stdio" in args:  # the remote side of an ssh node, started by a client over ssh
        from .stdio import main as stdio_main  # noqa: PLC0415 - only ssh nodes pay for it

        return stdio_main(args)
    from . import dialin  # noqa: PLC0415 - only dial-in workers pay for it

    if not args:
        parser = dialin.make_parser()
        sys.stderr.write(
            f"{parser.format_usage()}\n{dialin.DESCRIPTION}\n{dialin.EXAMPLE}\n{dialin.NOT_BY_HAND}\n"
            f"ppft-worker: error: --connect HOST:PORT is required (ppft-worker -h tells more)\n"
        )
        return EXIT_PROTOCOL
    return dialin.main(args)


if __name__ == "__main__":
    sys.exit(main())
