"""`python -m ppft_worker`: run one worker process (see `ppft_worker.process`). Imports nothing else."""

import sys

from .process import main

sys.exit(main())
