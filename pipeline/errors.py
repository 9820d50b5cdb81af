"""Errors meant for people: the CLI prints their one-line message and exits 2."""


class DrivecastError(Exception):
    """Base of every error whose message is a complete sentence for the user."""


class StageError(DrivecastError):
    """A stage cannot run with what it was given (missing input, failed check)."""
