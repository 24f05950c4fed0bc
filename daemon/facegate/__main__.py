"""`python -m facegate` is the same as the `facegate` command."""

from facegate.cli import main

raise SystemExit(main())
