"""`python -m ppft_server`: the same as the `ppserver` command."""

from .cli import main

raise SystemExit(main())
