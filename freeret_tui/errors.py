"""The one error hierarchy: every failure a person can cause or fix carries a message written for them.

The engine raises these; the CLI prints ``message`` on one line and the TUI shows it as a notification.
"""

from __future__ import annotations


class FreeretError(Exception):
    """Base class: ``str(err)`` is a complete, user-facing sentence."""


class UsageError(FreeretError):
    """A bad flag or argument combination (CLI exit status 2)."""


class ModelLoadError(FreeretError):
    """A model could not be found, downloaded or loaded."""


class UnsupportedInputError(FreeretError):
    """The model cannot take this input (for example an image given to a text-only model)."""


class StoreError(FreeretError):
    """The index database cannot be opened or does not match the model."""


class DatasetError(FreeretError):
    """An evaluation file (BEIR corpus, queries or qrels) is missing or malformed."""
