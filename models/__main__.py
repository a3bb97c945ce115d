"""`python -m models <command>`: see models/cli.py."""

from models.cli import main

raise SystemExit(main())
