"""Values with out-of-band buffers in the client: a value that cannot load here, or a buffered pickle that
does not hold together, fails its own job with `ResultDecodeError`; the server keeps working."""

from __future__ import annotations

import pytest

from ppft_client import ResultDecodeError
from ppft_protocol import Result

np = pytest.importorskip("numpy")


def big_unimportable(directory):
    """An array with an instance of a class that exists only where the job runs."""
    import os
    import sys

    import numpy

    with open(os.path.join(directory, "only_here_too.py"), "w") as f:
        f.write("class Thing:\n    pass\n")
    sys.path.insert(0, directory)
    import only_here_too

    return (only_here_too.Thing(), numpy.ones(100_000))


def add_one(x):
    return x + 1


def test_a_buffered_value_that_cannot_load_here_fails_its_job_only(make_server, tmp_path) -> None:
    server = make_server(1)
    job = server.submit(big_unimportable, (str(tmp_path),))
    with pytest.raises(ResultDecodeError, match="only_here_too") as info:
        job.result(timeout=30)
    assert "cannot be unpickled here" in str(info.value)
    assert server.submit(add_one, (1,)).result(timeout=30) == 2


def test_a_broken_buffered_pickle_from_a_peer_is_a_decode_error(make_server) -> None:
    server = make_server(1)
    job = server.submit(add_one, (1,))
    assert job.result(timeout=30) == 2
    broken = Result(job.tid, True, b"\xffPB5" + bytes(4) + b"junk" * 20)
    with pytest.raises(ResultDecodeError, match="buffers cannot be described"):
        job._decode(broken)
