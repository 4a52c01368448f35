"""The runtime that the worker's pool, the client and ppserver share: one I/O thread and what it drives.

A client and a ppserver each run one `Loop` on one thread, which owns every pipe and socket of the process:

* `loop`: the selector loop (file descriptors with callbacks, timers, a cheap cross-thread wake-up);
* `stream` (a protocol connection over a non-blocking socket: handshake deadline, heartbeats, silence),
  `outbuf` (bytes waiting for a pipe or socket), `link` (a peer that runs jobs for us, as a node with a
  window), `intake` (jobs arriving from a peer, renumbered for our own nodes);
* `memory` (memory limits as users write them, the limit flags of ppft-worker's command lines, a
  process's resident memory), `timelimits` (what a job that ran past its time limit gets, wherever it
  was stopped);
* `tasks` (what nodes take from their owner's queue, a frame at a time, and how results come back) and
  `batching` (how many jobs of a function go in one frame);
* `dialer` and `resolver` (connecting without blocking the loop), `addresses` (loopback or not, and host
  names that cannot be), `udp` (the sockets of auto-discovery);
* and what every part asks of the machine: `secret` and `safefiles` (the shared secret and the files
  trusted with it), `cpus` (how many CPUs this process may use), `cpufeatures` (AES hardware).

Other rooms and packages import the names below from `ppft_worker.runtime`, never a module of it. Nothing
here imports the worker process (`ppft_worker.process`), the pool (`ppft_worker.pool`) or anything above
them, and a worker process imports nothing of it.
"""

from __future__ import annotations

from .addresses import host_problem, is_loopback
from .batching import MAX_BATCH, Batching
from .cpufeatures import has_aes_hardware, offer_aes_gcm
from .cpus import detect_ncpus
from .dialer import CONNECT_TIMEOUT, RESOLVE_TIMEOUT, STAGGER, Dial, describe_connect_error
from .intake import (
    TERMINATED_MESSAGE,
    BodyTable,
    Owner,
    ServedTask,
    take_jobs,
    unknown_function_result,
    withdraw,
)
from .link import WORKER_REFUSED, Link
from .loop import ErrorHandler, Loop, Timer, describe_callback
from .memory import count_option, format_bytes, memory_option, parse_memory_limit, resident_bytes
from .outbuf import OutBuffer
from .refs import RefBook, RefSync, memory_refusal
from .resolver import MAX_THREADS, AddrInfo, Resolution, resolve
from .safefiles import file_problem, folder_problem, owner_name
from .secret import (
    SECRET_ENV,
    WORKERS_SECRET_ENV,
    default_secret_path,
    read_secret_file,
    resolve_secret,
    resolve_workers_secret,
)
from .stream import Stream, describe_protocol_error, internal_error_reason
from .tasks import (
    CANCELLED_TYPE,
    MAX_FRAME_ARGS,
    Task,
    TaskQueue,
    adopt,
    collect_raw_results,
    collect_results,
    send_batch,
    take_batch,
)
from .timelimits import apply_limits, job_limit, note_limits, timeout_message, timeout_result
from .udp import READ_BURST, BroadcastEndpoint, bind_broadcast_socket, close_registered

__all__ = [
    "CANCELLED_TYPE",
    "CONNECT_TIMEOUT",
    "MAX_BATCH",
    "MAX_FRAME_ARGS",
    "MAX_THREADS",
    "READ_BURST",
    "RESOLVE_TIMEOUT",
    "SECRET_ENV",
    "STAGGER",
    "TERMINATED_MESSAGE",
    "WORKERS_SECRET_ENV",
    "WORKER_REFUSED",
    "AddrInfo",
    "Batching",
    "BodyTable",
    "BroadcastEndpoint",
    "Dial",
    "ErrorHandler",
    "Link",
    "Loop",
    "OutBuffer",
    "Owner",
    "RefBook",
    "RefSync",
    "Resolution",
    "ServedTask",
    "Stream",
    "Task",
    "TaskQueue",
    "Timer",
    "adopt",
    "apply_limits",
    "bind_broadcast_socket",
    "close_registered",
    "collect_raw_results",
    "collect_results",
    "count_option",
    "default_secret_path",
    "describe_callback",
    "describe_connect_error",
    "describe_protocol_error",
    "detect_ncpus",
    "file_problem",
    "folder_problem",
    "format_bytes",
    "has_aes_hardware",
    "host_problem",
    "internal_error_reason",
    "is_loopback",
    "job_limit",
    "memory_option",
    "memory_refusal",
    "note_limits",
    "offer_aes_gcm",
    "owner_name",
    "parse_memory_limit",
    "read_secret_file",
    "resident_bytes",
    "resolve",
    "resolve_secret",
    "resolve_workers_secret",
    "send_batch",
    "take_batch",
    "take_jobs",
    "timeout_message",
    "timeout_result",
    "unknown_function_result",
    "withdraw",
]
