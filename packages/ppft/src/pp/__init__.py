"""`import pp`: the name ppft 1.x also installs; the same API as `import ppft`."""

from ppft import *  # noqa: F403
from ppft import __all__, __version__  # noqa: F401
