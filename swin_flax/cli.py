"""The one error wrapper of every command-line entry point (train.py, convert_timm_weights.py,
and any new one): the user's mistakes end in one `error:` line and exit code 2, a signal-
driven stop in its own line and exit code 75, a bug in its traceback.

    def main(argv) -> int: ...
    if __name__ == "__main__":
        sys.exit(cli.run(main, sys.argv[1:]))

SWIN_FLAX_DEBUG=1 re-raises the user's errors too, with their tracebacks.

One convention for every module: results and progress go to stdout; `warning:` and `note:`
lines (`warn`, `note`) and `error:` lines go to stderr, so that a command's output can be
piped while its diagnostics stay on the terminal.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable

from swin_flax.errors import USER_ERRORS, RunPreempted

USAGE_EXIT_CODE = 2
# EX_TEMPFAIL from sysexits.h: "temporary failure, the user is invited to retry". Job
# schedulers can requeue on it; it differs from a crash (1), bad input (2) and kill (137).
PREEMPTED_EXIT_CODE = 75


def debugging() -> bool:
    return bool(os.environ.get("SWIN_FLAX_DEBUG"))


def warn(message: str) -> None:
    """A `warning:` line: something the user should act on, the run goes on."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def note(message: str) -> None:
    """A `note:` line: what the run decided for the user (reused, resumed, skipped)."""
    print(f"note: {message}", file=sys.stderr, flush=True)


# absl's message for a --config.key=value override that is not of the option's type.
_WRONG_TYPE_FLAG = re.compile(
    r"flag --(?P<key>[\w.]+)=(?P<value>.*?): (?:invalid literal for (?P<int>int)\(\) with "
    r"base 10|could not convert string to float): "
)


def flag_error_message(message: str) -> str:
    """absl's flag error, with Python's int()/float() wording replaced by what was expected:
    '--config.finetune.batch_size: an int was expected, got 16.5'."""
    match = _WRONG_TYPE_FLAG.match(message)
    if match is None:
        return message
    expected = "an int" if match.group("int") else "a number"
    return f"--{match.group('key')}: {expected} was expected, got {match.group('value')}"


def report_error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return USAGE_EXIT_CODE


def exit_tool(code: int) -> None:
    """The exit of a read-only tool (export, predict, convert): `sys.exit(code)`, except after
    a usage error, when the process ends at once. A failed orbax restore leaves tensorstore
    callbacks that fire into a closed asyncio loop during interpreter shutdown and print
    tracebacks after the one `error:` line; a read-only tool has nothing left to save then."""
    if code == USAGE_EXIT_CODE:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def run(main: Callable, *args, resume_hint: Callable[[], str] | None = None) -> int:
    """`main(*args)`'s exit code, with the project's errors turned into one line each.

    `resume_hint` gives the line printed after a RunPreempted (the command that resumes).
    """
    try:
        return main(*args) or 0
    except RunPreempted as stop:
        hint = f"\n{resume_hint()}" if resume_hint is not None else ""
        print(f"{stop}{hint}", file=sys.stderr, flush=True)
        return PREEMPTED_EXIT_CODE
    except USER_ERRORS as err:
        if debugging():
            raise
        return report_error(str(err))
