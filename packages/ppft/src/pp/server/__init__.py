"""`pp.server` is `ppft.server` (ppserver as a library); `python -m pp.server` runs ppserver."""

import sys

import ppft.server

sys.modules[__name__] = ppft.server
