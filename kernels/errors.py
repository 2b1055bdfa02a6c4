"""Errors shared by every package; torch-free so reports build without importing torch."""


class UsageError(ValueError):
    """Bad input from a user: printed as one line by the CLI, never as a traceback."""
