"""`python -m ppft`: one worker process, as ppft 1.7 started its workers (see `ppft.worker`)."""

import sys

from ppft_worker import main

sys.exit(main())
