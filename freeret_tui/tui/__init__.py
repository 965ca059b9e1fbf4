"""The Textual TUI: ``app.py`` (factory and app), ``screens.py``, ``widgets.py``, ``backend.py`` (engine side)."""
