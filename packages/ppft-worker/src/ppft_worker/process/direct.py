"""A direct worker: a worker process serving one client over the TCP connection its ppserver handed it.

A client sends `Attach` on a new connection to a ppserver; the ppserver answers `Attached` (the last thing
it writes there) and execs a worker with that socket as its fds 0 and 1
(`ppft_worker.pool.start_direct_worker`, which sets `PPFT_WORKER_DIRECT`). `main` then comes here with the
socket on `chan_in`/`chan_out`:

* Nothing is sent before the client's first bytes arrive (`FIRST_BYTES_TIMEOUT`, then the worker exits): the
  client speaks first after `Attached`, so our opening can never reach it in the same read as `Attached`.
* A new handshake, as the SERVER, with the ppserver's secret (the one the client proved to the ppserver),
  must end within `HANDSHAKE_TIMEOUT` (a SIGALRM, so a client that stalls in it cannot pin the process).
* Then the ordinary worker loop (`loop.WorkerLoop`): NodeInfo("worker", 1), jobs in, results out; EOF or Bye
  ends it. No output region and no shared segments: a mapped value must never leave the machine.

What the connection may use is the ppserver's decision, passed in the environment (`DIRECT_ENV`,
`AES_GCM_ENV`): an unsealed channel only when it grants this peer one, as for its own sessions; AES-256-GCM
offered when it would offer it.

This is started by exec, once per direct link: the fork server of a pool is an optimisation left out here
(a client opens its direct links once, when it connects).
"""

from __future__ import annotations

import os
import select
import signal

from ppft_protocol import Connection, Role

from .loop import EXIT_PROTOCOL, WorkerLoop, logger, run_loop

__all__ = ["FIRST_BYTES_TIMEOUT", "HANDSHAKE_TIMEOUT", "serve_direct"]

FIRST_BYTES_TIMEOUT = 10.0
"""Seconds a direct worker waits for the client's first bytes after `Attached` before it exits."""

HANDSHAKE_TIMEOUT = 10.0
"""Seconds, from those first bytes, in which the client must finish the new handshake."""


class _HandshakeTimeout(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise _HandshakeTimeout


class _DirectLoop(WorkerLoop):
    """The worker loop, whose handshake deadline ends once the client proved the secret."""

    def established(self) -> None:
        signal.alarm(0)
        super().established()


def serve_direct(chan_in: int, chan_out: int, secret: bytes, *, allow_plain: bool, aes_gcm: bool) -> int:
    """Serve the client on the socket `chan_in`/`chan_out` (two descriptors of one socket) as a direct worker;
    returns the exit code. The caller tied this process to its parent."""
    poller = select.poll()
    poller.register(chan_in, select.POLLIN)
    if not poller.poll(FIRST_BYTES_TIMEOUT * 1000):
        logger().warning(
            "the client sent nothing within %.0f s of Attached (it starts its handshake at once): exiting",
            FIRST_BYTES_TIMEOUT,
        )
        return EXIT_PROTOCOL
    os.set_blocking(chan_in, True)  # the ppserver's loop had the socket non-blocking; it is done with it now
    conn = Connection(Role.SERVER, secret, allow_plain=allow_plain, aes_gcm=aes_gcm)
    state = _DirectLoop(chan_in, chan_out, conn, None)
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(max(1, round(HANDSHAKE_TIMEOUT)))
    try:
        return run_loop(state)
    except _HandshakeTimeout:
        logger().warning("the client did not finish its handshake within %.0f s: exiting", HANDSHAKE_TIMEOUT)
        return EXIT_PROTOCOL
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        os.close(chan_in)  # the client sees EOF now rather than at exit
        if chan_out != chan_in:
            os.close(chan_out)
