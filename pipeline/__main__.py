"""`python -m pipeline ...` is the same as the `drivecast` command."""

from pipeline.cli import main

raise SystemExit(main())
