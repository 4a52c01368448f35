"""`Server`: ppft's job server, with ppft 1.7's signature and behaviour, on the new machinery.

    job_server = Server()                                   # local workers, one per usable CPU
    job = job_server.submit(math.sin, (math.pi / 2,), (), ("math",))
    job()                                                   # 1.0 (a Job is also a concurrent.futures.Future)

What changed from ppft 1.7 is listed in docs/migration.md: a job that raised re-raises its exception from
`job()`; a worker that dies does not hang its job; there is no default secret.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import logging
import pickle
import sys
import time
import types
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from ppft_protocol import FunctionBody
from ppft_worker.runtime import detect_ncpus, host_problem, parse_memory_limit, resolve_secret

from .completion import make_job
from .errors import DestroyedServerError
from .job import Job
from .limits import check_count, check_timeout
from .nodes import (
    ADDRESS_HINT,
    Candidate,
    Discovery,
    DiscoveryError,
    check_host_names,
    parse_ppservers,
    split_dask_entries,
)
from .refs import PICKLED, Ref, RefTable, forget_pickled, table_of
from .scheduler import Scheduler
from .shipping import check_submit_args, function_job, pickle_args
from .stats import Statistics, format_stats
from .version import __version__

__all__ = ["Server"]

log = logging.getLogger("ppft.client")

_live_servers: weakref.WeakSet[Server] = weakref.WeakSet()
_MethodType = types.MethodType  # `type(f) is` it: a bound method's type cannot be subclassed
_SUBMIT_CHUNK = 256  # jobs queued at once by `_submit_all`: a full frame


@atexit.register
def _destroy_all() -> None:
    """At interpreter exit, no worker process is left behind."""
    for server in list(_live_servers):
        server.destroy()


class Server:
    """Parallel Python execution server: runs submitted jobs on local worker processes."""

    default_port = 60000

    def __init__(
        self,
        ncpus: int | str = "autodetect",
        ppservers: tuple[Any, ...] = (),
        secret: str | bytes | None = None,
        restart: bool = False,
        proto: int | None = None,
        socket_timeout: float = 3600,
        *,
        seal: bool = True,
        live_output: bool = False,
        job_timeout: float | None = None,
        worker_memory_limit: int | str | None = None,
        max_jobs_per_worker: int | None = None,
        ssh: tuple[str, ...] = ("ssh",),
    ) -> None:
        """`ncpus`: local worker processes ("autodetect": the CPUs this process may use, affinity and
        cgroup quota included); `ppservers`: remote ppservers; `secret`: their shared secret (left out:
        $PPFT_SECRET or ~/.ppft/secret); `restart`: a fresh worker process for every job; `proto`: the
        pickle protocol (left out: the highest); `socket_timeout`: seconds before a silent remote link is
        given up; `seal=False`: links to ppservers on this machine (loopback) that allow it
        (`--allow-plain-loopback`) are left unencrypted, which saves the cost of sealing large payloads;
        every other link stays sealed (docs/security.md); `live_output=True`: print each line a job writes
        as it writes it, prefixed with the job and node (`[job 3 on local] text`), instead of a job's whole
        output when its value is asked for (docs/api.md, "Job output"); `job_timeout`: the seconds every job
        may run on a worker, unless its `submit(timeout=)` says otherwise; `worker_memory_limit` ("2GiB",
        or bytes): a local worker whose resident memory passes it is stopped, its job failing with
        `WorkerLostError`; `max_jobs_per_worker`: a local worker is replaced after that many jobs
        (docs/api.md, "Limits on jobs and workers"; an ssh node's workers take theirs from its entry:
        `ssh://host?worker_memory_limit=2GiB&max_jobs_per_worker=1000`); `ssh`: the command that reaches the
        `ssh://[user@]host[:port]` entries of `ppservers` (docs/cluster.md, "The quickest way: ssh"), such
        as ("ssh", "-i", "~/.ssh/cluster")."""
        if not isinstance(ppservers, tuple):
            raise TypeError(
                f"ppservers argument must be a tuple, not {type(ppservers).__name__}: write "
                f"ppservers=('host:port',) for one server"
            )
        if secret is not None and not isinstance(secret, (str, bytes)):
            raise TypeError(
                f"secret must be of a string type (str or bytes), not {type(secret).__name__}; or leave it "
                f"out to use $PPFT_SECRET or ~/.ppft/secret"
            )
        if not isinstance(seal, bool):
            raise TypeError(
                f"seal must be True or False (False: unsealed links to ppservers on this machine), "
                f"not {type(seal).__name__} {seal!r}"
            )
        self._job_timeout = check_timeout(job_timeout, "job_timeout")
        memory_limit = parse_memory_limit(worker_memory_limit, "worker_memory_limit")
        check_count(max_jobs_per_worker, "max_jobs_per_worker")
        self.logger = logging.getLogger("ppft")
        self._ssh: tuple[str, ...] = ("ssh",)
        ssh_targets: list[Any] = []  # ssh://[user@]host[:port]: docs/cluster.md
        if ssh != ("ssh",) or any(map(_is_ssh, ppservers)):
            from .ssh import check_ssh_prefix, split_ssh_entries  # noqa: PLC0415 - only when used

            self._ssh = check_ssh_prefix(ssh)
            ppservers, ssh_targets = split_ssh_entries(ppservers)
            if ssh_targets:
                self._check_ssh_program(repr(ssh_targets[0].name))
        ppservers, dask_entries = split_dask_entries(ppservers)  # dask://, Client, cluster: docs/dask.md
        direct, auto = parse_ppservers(ppservers, self.default_port)
        check_host_names(ppservers, self.default_port)  # a name no resolver can answer for: refused here
        # ppft 1.7's (host, port) pairs; an ssh node as the 1-tuple of its entry, which pathos joins back
        self.ppservers: list[tuple[str, int] | tuple[str]] = [*direct, *((t.entry,) for t in ssh_targets)]
        self.auto_ppservers: list[tuple[tuple[str, int], tuple[str, int]]] = auto
        self.secret = secret
        self._seal = seal
        self._secret_bytes: bytes | None = None
        self._discoveries: list[Discovery] = []
        self.socket_timeout = socket_timeout
        self._exiting = False
        self._refs: RefTable | None = None  # made by the first `put`
        self._proto = pickle.HIGHEST_PROTOCOL if proto is None else int(proto)
        self._restart = bool(restart)
        self._creation_time = time.time()
        self._status_page: Any = None  # a ppft_worker.observe.StatusServer, once serve_status() ran
        self._tids = itertools.count()
        self._ncpus = self._check_ncpus(ncpus)
        if not isinstance(live_output, bool):
            raise TypeError(
                f"live_output must be True or False, not {type(live_output).__name__} {live_output!r}"
            )
        self._scheduler = Scheduler(
            self._ncpus, restart=self._restart, silence_timeout=max(2.0, min(float(socket_timeout), 10.0)),
            live_output=live_output, memory_limit=memory_limit, max_jobs_per_worker=max_jobs_per_worker,
        )  # fmt: skip
        try:  # from here on, threads and workers run: a failure stops them all before it is raised
            _live_servers.add(self)
            self._scheduler.discoveries = [f"{broadcast}:{port}" for _, (broadcast, port) in auto]
            for host, port in direct:
                self.connect1(host, port)
            if ssh_targets:
                from .ssh import add_ssh_nodes  # noqa: PLC0415 - ssh nodes only when used

                add_ssh_nodes(self._scheduler, ssh_targets, self._ssh)
            for (interface, port), (broadcast, _) in self.auto_ppservers:
                self._start_discovery(interface, broadcast, port)
            if dask_entries:
                from .nodes import add_dask_nodes  # noqa: PLC0415 - dask and asyncio only when used

                add_dask_nodes(self._scheduler, dask_entries)
        except BaseException:
            self.destroy()
            raise
        log.info("ppft %s server started with %d local workers", __version__, self._ncpus)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    # -- jobs ------------------------------------------------------------------------------------------

    def submit(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...] = (),
        depfuncs: tuple[Any, ...] = (),
        modules: tuple[str, ...] = (),
        callback: Callable[..., Any] | None = None,
        callbackargs: tuple[Any, ...] = (),
        group: str = "default",
        globals: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Job:
        """Queue `func(*args)`; returns its `Job` at once.

        `depfuncs`: functions and classes `func` calls (shipped with it); `modules`: modules to import
        first ("math", "numpy as np", "from os import path"); `callback(*callbackargs, value)` runs when the
        job is done, off the I/O thread; `group`: for `wait(group)`; `globals`: a dict (say, `globals()`)
        from which the modules, functions and classes that `func` uses are shipped automatically;
        `timeout`: the seconds the job may run once a worker starts it (not counting its time in the
        queue), after which its worker is killed and replaced and the job raises `JobTimeoutError` (left
        out: the server's `job_timeout`)."""
        if self._exiting:
            raise DestroyedServerError("Cannot submit jobs: server instance has been destroyed")
        check_submit_args(func, args, depfuncs, modules, callback, callbackargs, globals)
        limit = self._job_timeout if timeout is None else check_timeout(timeout, "timeout")
        if type(func) is _MethodType:  # as ppft: the instance travels as the first argument
            args = (func.__self__, *args)
            func = func.__func__
        proto = self._proto
        body, data = function_job(func, depfuncs, modules, globals, proto)
        if PICKLED:  # refs this thread pickled for no job (a failed submit): not this job's
            forget_pickled()
        sargs = pickle_args(args, proto, self._ncpus > 0) if data is None else data.wrap(args, proto)
        scheduler = self._scheduler
        job = make_job(self, next(self._tids), body, sargs, proto, scheduler, callback, callbackargs, group)
        if limit is not None:
            job.timeout = limit
            job.solo = True  # it runs alone on a worker: its time counts from when it is sent there
        scheduler.submit(job)
        return job

    def put(self, obj: Any) -> Ref:
        """Pickle `obj` once and ship it at most once to each node: a job given the `Ref` in its arguments
        (at any depth) gets `obj` (docs/api.md, "Objects shipped once: put()"). `ShippingError` if it cannot
        be pickled (nothing is sent)."""
        if self._exiting:
            raise DestroyedServerError("Cannot put objects: server instance has been destroyed")
        return table_of(self).put(obj, self._proto)

    def _submit_body(
        self,
        body: FunctionBody,
        sargs: bytes,
        callback: Callable[..., Any] | None = None,
        callbackargs: tuple[Any, ...] = (),
        group: str = "default",
    ) -> Job:
        scheduler = self._scheduler
        tid = next(self._tids)
        job = make_job(self, tid, body, sargs, self._proto, scheduler, callback, callbackargs, group)
        if self._job_timeout is not None:
            job.timeout = self._job_timeout
            job.solo = True
        scheduler.submit(job)
        return job

    def _submit_all(self, func: Callable[..., Any], arg_tuples: Iterable[tuple[Any, ...]]) -> list[Job]:
        """`submit(func, args)` for each of `arg_tuples` (`Executor.map`): `func` is captured once, and
        the jobs are queued a frame's worth at a time, each batch under one lock acquisition, so the
        workers start on the first ones while the rest are still being pickled."""
        if self._exiting:
            raise DestroyedServerError("Cannot submit jobs: server instance has been destroyed")
        check_submit_args(func, (), (), (), None, (), None)
        prefix: tuple[Any, ...] = ()
        if type(func) is _MethodType:  # as submit: the instance travels as the first argument
            prefix = (func.__self__,)
            func = func.__func__
        proto = self._proto
        body, data = function_job(func, (), (), None, proto)  # module data: as at this call, for every job
        scheduler = self._scheduler
        tids = self._tids
        limit = self._job_timeout
        shared = self._ncpus > 0  # large buffers into shared segments only for local workers to map
        jobs: list[Job] = []
        chunk: list[Job] = []
        for job_args in arg_tuples:
            call_args = prefix + job_args if prefix else job_args
            if PICKLED:
                forget_pickled()
            sargs = pickle_args(call_args, proto, shared) if data is None else data.wrap(call_args, proto)
            job = make_job(self, next(tids), body, sargs, proto, scheduler)
            if limit is not None:
                job.timeout = limit
                job.solo = True
            chunk.append(job)
            if len(chunk) == _SUBMIT_CHUNK:
                scheduler.submit_many(chunk)
                jobs += chunk
                chunk = []
        if chunk:
            scheduler.submit_many(chunk)
            jobs += chunk
        return jobs

    def insert(self, sfunc: FunctionBody, sargs: bytes, task: Job | None = None) -> Job:
        """Queue an already-serialized job: `sfunc` a `FunctionBody`, `sargs` its pickled argument tuple.

        ppft 1.7 used this internally for ppserver; here ppserver has its own queue, and `insert` remains
        for code that serializes its jobs itself. A `task` made ppft 1.7's way (`_Task(server, tid, ...)`,
        no function yet) runs `sfunc`; one that was already submitted is queued again."""
        if task is None:
            return self._submit_body(sfunc, sargs)
        if self._exiting:
            raise DestroyedServerError("Cannot submit jobs: server instance has been destroyed")
        if task.wire is None:
            task.bind(sfunc, sargs, self._proto)
        if self._job_timeout is not None and task.timeout is None:
            task.timeout = self._job_timeout
            task.solo = True
        task._sched = self._scheduler
        self._scheduler.submit(task)
        return task

    def wait(self, group: str | None = None) -> None:
        """Wait until every job (of `group`, when given) is finished."""
        self._scheduler.wait(group or None)

    # -- workers and nodes -----------------------------------------------------------------------------

    def get_ncpus(self) -> int:
        """The number of local worker processes."""
        return self._ncpus

    def set_ncpus(self, ncpus: int | str = "autodetect") -> None:
        """Change the number of local workers at run time; 0 holds local jobs until workers come back."""
        n = self._check_ncpus(ncpus)
        if n == self._ncpus:
            return  # pathos asks for "autodetect" on every submit when its CPU count differs from ours
        self._ncpus = n
        self._scheduler.resize(n)

    @staticmethod
    def _check_ncpus(ncpus: int | str) -> int:
        if ncpus == "autodetect":
            return detect_ncpus()
        if not isinstance(ncpus, int) or isinstance(ncpus, bool):
            raise TypeError(
                f"ncpus must have 'int' type (the number of local worker processes) or be 'autodetect', "
                f"not {type(ncpus).__name__} {ncpus!r}"
            )
        if ncpus < 0:
            raise ValueError(
                f"ncpus must be an integer >= 0 (0: no local worker, every job runs on the ppservers) or "
                f"'autodetect', not {ncpus}"
            )
        return ncpus

    def connect1(self, host: str, port: int | None = None, persistent: bool = True) -> None:
        """Use the ppserver at `host:port` (from now on; `persistent`: reconnect whenever it drops), or the
        ssh node `host` = "ssh://[user@]host[:port][?options]" (no `port` then).
        `ValueError` for a host that can never be reached (`a..b`) or a port outside 1-65535."""
        if _is_ssh(host):
            if port is not None:
                raise ValueError(f"connect1({host!r}, {port!r}): an ssh node's port goes in its address, "
                                 "ssh://host:PORT")  # fmt: skip
            from .ssh import add_ssh_nodes, parse_ssh_entry  # noqa: PLC0415 - ssh nodes only when used

            target = parse_ssh_entry(host)
            self._check_ssh_program(f"connect1({host!r})")
            add_ssh_nodes(self._scheduler, [target], self._ssh, persistent=persistent)
            return
        if port is None:
            raise TypeError(f"connect1({host!r}) needs the ppserver's port: connect1({host!r}, 60000)")
        problem = host_problem(host)
        if problem:
            raise ValueError(f"connect1({host!r}, {port!r}): {problem}; {ADDRESS_HINT}")
        if (
            isinstance(port, bool)
            or not isinstance(port, (int, str))
            or not str(port).isdigit()
            or not (0 < int(port) <= 65535)
        ):
            raise ValueError(f"connect1({host!r}, {port!r}): the port must be a number in 1-65535")
        self._scheduler.add_remote(host, int(port), self._secret(), persistent=persistent, seal=self._seal)

    def _check_ssh_program(self, where: str) -> None:
        """`FileNotFoundError` when the ssh command's program is not here (`where` names the entry)."""
        from .ssh import ssh_program_problem  # noqa: PLC0415 - ssh nodes only when used

        problem = ssh_program_problem(self._ssh)
        if problem:
            raise FileNotFoundError(f"{where}: {problem}")

    def _secret(self) -> bytes:
        if self._secret_bytes is None:
            self._secret_bytes = resolve_secret(self.secret)
        return self._secret_bytes

    def _start_discovery(self, interface: str, broadcast: str, port: int) -> None:
        secret = self._secret()
        scheduler = self._scheduler

        def found(host: str, tcp_port: int, candidate: Candidate) -> None:
            scheduler.add_remote(
                host, tcp_port, secret, persistent=True, seal=self._seal, candidate=candidate
            )

        def start() -> None:
            discovery = Discovery(
                scheduler.loop, interface=interface, broadcast=broadcast, port=port, on_found=found
            )
            try:
                discovery.start()
            except DiscoveryError as exc:
                log.warning("auto-discovery on %s:%d cannot start: %s", interface, port, exc)
                with contextlib.suppress(ValueError):
                    scheduler.discoveries.remove(f"{broadcast}:{port}")
                scheduler.watch.changed()
                return
            self._discoveries.append(discovery)

        self._scheduler.call(start)

    def get_active_nodes(self) -> dict[str, int]:
        """The nodes in use, as {node: worker count}: "local", and each ppserver that is connected."""
        nodes = {"local": self._ncpus}
        for node in list(self._scheduler.nodes):
            if node.ready:
                nodes[node.name] = node.workers
        return nodes

    def get_stats(self) -> dict[str, Statistics]:
        """Job statistics per node: {node: Statistics with ncpus, njobs, time}."""
        pool = self._scheduler.pool
        local = Statistics(self._ncpus)
        local.njobs = pool.jobs_done
        local.time = pool.job_time
        stats = {"local": local}
        for node in list(self._scheduler.nodes):
            stat = Statistics(node.workers)
            stat.njobs = node.jobs_done
            stat.time = node.job_time
            stats[node.name] = stat
        return stats

    def status(self) -> dict[str, Any]:
        """This client's live status: its local workers (pid, busy or idle, current function, RSS), every
        node with its state and the reason when it takes no jobs, the queue, jobs per second over the last
        minutes, how jobs ended (ok, error, lost, timeout, cancelled), a job duration histogram and recent
        failures: the same shape as a ppserver's /status.json (docs/cluster.md lists every field)."""
        from .status import client_status  # noqa: PLC0415 - the web side only when asked

        return client_status(self._scheduler, self._ncpus)

    def serve_status(
        self, address: str = "127.0.0.1:0", *, token: str | None = None, public: bool = False
    ) -> str:
        """Serve this client's live status page (/), /status.json and Prometheus /metrics at `address`
        (`[HOST:]PORT`, port 0: any free one), from a thread of its own, until `destroy()`; returns the
        page's URL. Read-only; loopback unless `address` says otherwise, and then only with `token` (every
        request must carry it) or `public=True`. A second call for the same host returns the same URL."""
        from ppft_worker.observe import (  # noqa: PLC0415 - the web side only when asked
            ExposureError,
            StatusServer,
            check_exposure,
            parse_http_address,
        )

        if self._exiting:
            raise DestroyedServerError("Cannot serve the status page: server instance has been destroyed")
        try:
            host, port = parse_http_address(address, "serve_status address")
            check_exposure(host, token, public, f"serve_status({address!r})", ("token=TOKEN", "public=True"))
        except ExposureError as exc:
            raise ValueError(str(exc)) from None
        page = self._status_page
        if page is not None:
            if host == page.host and port in (0, page.port):
                return str(page.url)
            raise ValueError(
                f"this Server already serves its status page at {page.url}; one page per Server (it is "
                f"stopped by destroy())"
            )
        page = StatusServer(host, port, self.status, token=token, public=public)
        page.start()  # an OSError (address in use) reaches the caller as it is
        self._status_page = page
        log.info("status page of this client on %s", page.url)
        return str(page.url)

    def print_stats(self) -> None:
        """Print ppft's job statistics table."""
        remote = self.get_active_nodes()
        local = remote.pop("local")
        text = format_stats(
            self.get_stats(), self._creation_time, self._scheduler.unfinished(), local, remote
        )
        sys.stdout.write(text)

    def destroy(self) -> None:
        """Stop every worker; jobs not finished yet fail with `DestroyedServerError` (never hang)."""
        self._exiting = True
        page, self._status_page = self._status_page, None
        if page is not None:
            page.close()
        for discovery in self._discoveries:
            self._scheduler.call(discovery.close)
        if self._refs is not None:
            self._refs.close()
        self._scheduler.destroy()
        _live_servers.discard(self)


def _is_ssh(entry: object) -> bool:
    """Whether a `ppservers` entry names an ssh node (`ssh://...`): checked without importing ssh's code."""
    return isinstance(entry, str) and entry.strip()[:6].lower() == "ssh://"
