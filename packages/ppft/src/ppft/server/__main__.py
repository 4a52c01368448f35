"""`python -m ppft.server`: ppserver (the same as the `ppserver` command and `python -m ppft_server`)."""

import sys

from ppft_server.cli import main

sys.exit(main())
