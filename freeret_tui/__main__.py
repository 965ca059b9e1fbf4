"""Lets ``python -m freeret_tui`` run the same CLI as the ``freeret-tui`` console script."""

from freeret_tui.cli import main

raise SystemExit(main())
