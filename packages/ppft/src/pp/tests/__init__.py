"""`pp.tests` is `ppft.tests` (the classic examples); `python -m pp.tests` runs them."""

import sys

import ppft.tests

sys.modules[__name__] = ppft.tests
