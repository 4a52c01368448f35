"""`import pp`: ppft 1.x installs the package under this name too; here it is the same package as `ppft`.

Every name and submodule is ppft's own object: `pp.Server is ppft.Server`, `pp.common is ppft.common`
(`import pp.common` works), and `pp.server`/`pp.tests` load `ppft.server`/`ppft.tests` on first import.
This module must never define anything of its own.
"""

import sys

from ppft import *  # noqa: F403
from ppft import __all__, __version__, auto, common, transport, worker  # noqa: F401

for _name, _module in (("auto", auto), ("common", common), ("transport", transport), ("worker", worker)):
    sys.modules[f"{__name__}.{_name}"] = _module
del _name, _module
