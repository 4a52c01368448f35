"""What travels to a worker for a job: its function captured as a `FunctionBody`, and its arguments pickled.

* `functions`: `function_body` (the one content-addressed `FunctionBody` of `submit`'s `func`, `depfuncs`,
  `modules` and `globals`, cached per function), `function_job` (a job's wire parts), `pickle_args` and
  `unpickle`; `builder` builds the body by the rules its text gives;
* `sources` and `blocks`: a function's or class's source, proved to be the source of *that* object;
* `bodypickle`: callables that have no such source, pickled by value without their module's globals;
* `moduledata`: the module data a function reads, read fresh at every submit;
* `arguments`: `submit`'s classic type checks, and the arguments' pickle.

It runs on the caller's thread inside `submit`: it never executes user code, imports the modules named in
`modules=`, or does I/O. It imports nothing of the client but itself.
"""

from __future__ import annotations

from .arguments import ShippingError, check_submit_args, pickle_args, pickle_args_by, unpickle
from .bodypickle import BODY_PICKLE_PROTOCOL
from .functions import function_body, function_job
from .moduledata import UNSHIPPED, ModuleData

__all__ = [
    "BODY_PICKLE_PROTOCOL",
    "UNSHIPPED",
    "ModuleData",
    "ShippingError",
    "check_submit_args",
    "function_body",
    "function_job",
    "pickle_args",
    "pickle_args_by",
    "unpickle",
]
