"""`python -m pp`: one worker process, as `python -m ppft` (ppft 1.x started its workers as either)."""

import sys

from ppft_worker import main

sys.exit(main())
