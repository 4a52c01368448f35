"""`Template`: a function with its submit options fixed, submitted again and again with new arguments."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .limits import check_timeout

if TYPE_CHECKING:
    from .job import Job
    from .server import Server

__all__ = ["Template"]


class Template:
    """ppft's Template: `Template(server, func, depfuncs, modules, callback, callbackargs, group, globals)`,
    then `template.submit(*args)` for each set of arguments. `timeout`: each job's time limit, as
    `Server.submit(timeout=)`."""

    def __init__(
        self,
        job_server: Server,
        func: Callable[..., Any],
        depfuncs: tuple[Any, ...] = (),
        modules: tuple[str, ...] = (),
        callback: Callable[..., Any] | None = None,
        callbackargs: tuple[Any, ...] = (),
        group: str = "default",
        globals: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> None:
        self.job_server = job_server
        self.func = func
        self.depfuncs = depfuncs
        self.modules = modules
        self.callback = callback
        self.callbackargs = callbackargs
        self.group = group
        self.globals = globals
        self.timeout = check_timeout(timeout, "timeout")

    def submit(self, *args: Any) -> Job:
        """Submit the function with `args`."""
        return self.job_server.submit(
            self.func, args, self.depfuncs, self.modules, self.callback, self.callbackargs, self.group,
            self.globals, timeout=self.timeout,
        )  # fmt: skip
