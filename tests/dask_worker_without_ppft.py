"""`python dask_worker_without_ppft.py ARGS...`: dask's worker, in an interpreter that cannot import ppft.

The dask integration tests start their workers through this file, so a job that needed anything of this
project on a worker (a runner pickled by reference, a ppft exception class) fails there as it would on a
real cluster where only dask is installed.
"""

import sys

BLOCKED = {"ppft", "pp", "ppft_protocol", "ppft_worker", "ppft_client", "ppft_server"}


class _Blocker:
    """A meta path finder that refuses this project's packages before any other finder is asked."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.split(".", maxsplit=1)[0] in BLOCKED:
            raise ImportError(f"{name} is blocked on this dask worker: it must need nothing of ppft")


sys.meta_path.insert(0, _Blocker())
for _name in list(sys.modules):
    if _name.split(".", maxsplit=1)[0] in BLOCKED:
        del sys.modules[_name]

from distributed.cli.dask_worker import main  # noqa: E402 - only after the blocker is in place

if __name__ == "__main__":
    sys.argv[0] = "dask-worker"
    sys.exit(main())
