"""Errors a user sees as one clear line (no traceback)."""


class UserError(Exception):
    """A failure to report as one line on stderr with a non-zero exit code."""

    exit_code = 1
