"""`python -m router`: runs the `alert-router` command (router/cli.py) and exits with its status."""

from router.cli import main

raise SystemExit(main())
