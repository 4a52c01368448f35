"""Reverse md5: search ranges of integers for the one whose md5 is given; the first hit wins.

python -m ppft.tests.reverse_md5 [ncpus]
"""

import hashlib
import sys

import ppft
from ppft.common import b_
from ppft.tests import check, ncpus_from_argv


def md5test(hash: str, start: int, end: int) -> int | None:
    """The integer in [start, end) whose decimal text has md5 `hash`, else None."""
    from hashlib import md5

    from ppft.common import b_

    for x in range(start, end):
        if md5(b_(str(x))).hexdigest() == hash:
            return x
    return None


def main() -> None:
    job_server = ppft.Server(ncpus_from_argv())
    try:
        secret_number = 182918
        target = hashlib.md5(b_(str(secret_number))).hexdigest()
        start, end, parts = 1, 200_000, 16
        step = (end - start) // parts + 1
        jobs = [
            job_server.submit(md5test, (target, start + i * step, min(start + (i + 1) * step, end)))
            for i in range(parts)
        ]
        found = [result for result in (job() for job in jobs) if result is not None]
        check(found == [secret_number], f"found {found}, want [{secret_number}]")
        print(
            f"reverse_md5: md5 {target} reversed to {secret_number} by {parts} jobs "
            f"({job_server.get_ncpus()} workers)"
        )
    finally:
        job_server.destroy()


if __name__ == "__main__":
    main()
    sys.exit(0)
