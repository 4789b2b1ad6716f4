"""Errors the user can fix, and the one way every top-level script reports them.

A stage raises a subclass of :class:`UserError` when the input, a file or a setting needs the user's
action; the message names the file and what to do. :func:`run_main` turns it into one ``error: ...``
line on stderr and exit code :data:`USER_ERROR_EXIT` instead of a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

USER_ERROR_EXIT = 2
INTERRUPTED_EXIT = 130


class UserError(Exception):
    """Something the user must do (fix a file, pass a flag, train first); never a bug of ours."""


def run_main(main: Callable[..., int | None], *args) -> int:
    """Run a script's ``main(*args)``: a :class:`UserError` becomes ``error: message`` and exit 2, Ctrl+C exit 130."""
    try:
        return int(main(*args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USER_ERROR_EXIT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT
