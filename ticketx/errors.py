"""Errors a user can cause: turned by the CLI into one red line and an exit code."""

from __future__ import annotations


class TicketxError(Exception):
    """A runtime failure the user can act on (exit code 1). `hint` is printed on a second line."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class UsageError(TicketxError):
    """Bad input: an option, a spec key, a name or a file (exit code 2)."""

    exit_code = 2


def did_you_mean(word: str, choices: list[str] | tuple[str, ...], what: str) -> str:
    """'unknown model 'vgg91'; did you mean 'vgg19'? (choose from: ...)'."""
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    msg = f"unknown {what} {word!r}"
    if close:
        msg += f"; did you mean {close[0]!r}?"
    return msg + f" (choose from: {', '.join(sorted(choices))})"
