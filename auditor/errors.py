"""The project's one user-facing error type (kept free of heavy imports for the CLI)."""


class AuditorError(Exception):
    """A user-facing error: bad input, bad rules, bad arguments.

    The CLI catches this one type, prints ``str(err)`` on one line and exits 2.
    Messages follow ``file:line: field 'x' <what is wrong> (<what was expected>)``.
    """
