"""freeret-tui: local, private, keyboard-driven search over a person's own photos and documents."""

__version__ = "0.1.0"
