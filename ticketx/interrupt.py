"""Stop requests (Ctrl-C, SIGTERM) that are never lost: a flag *and* an exception.

Python runs a signal handler between two bytecodes of whatever the main thread executes. A
handler that only raises KeyboardInterrupt loses the request when that code is a `__del__`, a
weakref or garbage-collector callback (the exception is printed as "Exception ignored" and
dropped) or a broad `except BaseException` that does not re-raise: the run then trains on and
writes its result as if nothing had happened. So the handler records the signal and raises, and
the boundaries of every stage (each training step, each atomic write) call `check()`, which
raises again while a stop is pending: a swallowed raise costs at most one step.

Outcome, decided in `ticketx.cli.main`: exit 128 + the signal number (130 SIGINT, 143 SIGTERM)
with one line that says how to resume; a signal that arrives once the command's result is
safely written is reported and the exit code stays 0. `run` (through `ticketx.__main__.entry`: the `ticketx` executable
and `python -m ticketx`) installs the handlers before anything is imported, so a signal during
start-up is handled the same way, and ignores signals once the outcome is decided, so the
interpreter's shutdown can neither lose the exit code nor be killed by the default action
(exit -2).
"""

from __future__ import annotations

import contextlib
import signal
import sys
from typing import Any, Callable, Iterator, NoReturn

SIGNALS = (signal.SIGINT, signal.SIGTERM)
# signal: the pending stop request (0: none); finished: what the command wrote as its result
# (a stop from then on changes nothing); closing: the exit code is decided (record, never raise);
# noted: the user was told that a late signal changed nothing.
# keeps: what the running command has on disk when stopped (a key of KEPT, from KEEPS).
_state: dict[str, Any] = {"signal": 0, "finished": None, "closing": False, "noted": False, "keeps": "nothing"}

# What an interrupted command tells the user it had saved. Only the commands that train
# checkpoint as they go (a rerun resumes them); the others write their output at the end or
# nothing at all (validate, check, status, report, inspect, compare, ...): nothing to resume.
KEPT = {
    "checkpoints": "finished stages and the last epoch checkpoint are saved; rerun the same command to resume.",
    "nothing": "it had saved nothing (it writes its output only when it finishes); rerun the same command.",
    "jobs": "jobs submitted before the stop keep running (ticketx study status shows them); rerun to submit the rest.",
}
KEEPS = {"find": "checkpoints", "transfer": "checkpoints", "study run": "checkpoints", "study submit": "jobs"}


def command_of(argv: list[str]) -> str:
    """The command `argv` (after the program's name) runs: 'find', 'study run', ... ('' for none).

    Read from the words alone, before the CLI is imported (the only option before a command is
    the flag --debug), so a stop during start-up says the same as one later.
    """
    words = [a for a in argv if not a.startswith("-")]
    return " ".join(words[:2]) if words[:1] == ["study"] else (words[0] if words else "")


def _unraisable(hook: Any) -> Any:
    """sys.unraisablehook that drops the KeyboardInterrupt of a pending stop: it was raised in a
    finaliser ("Exception ignored in ..."), and `check()` stops the run at the next boundary."""

    def quiet(info: Any) -> None:
        if _state["signal"] and isinstance(info.exc_value, KeyboardInterrupt):
            return
        hook(info)

    quiet.ticketx = True  # type: ignore[attr-defined]
    return quiet


def _handler(signum: int, frame: Any) -> None:
    """Record the stop request and raise; a second signal during the unwind only records."""
    first = not _state["signal"]
    if first:
        _state["signal"] = signum
    if first and _state["finished"] is None and not _state["closing"]:
        raise KeyboardInterrupt


def requested() -> int:
    """The signal number of the pending stop request (0 when none)."""
    return int(_state["signal"])


def check() -> None:
    """Raise KeyboardInterrupt when a stop was requested: called at every stage boundary.

    A no-op unless ticketx's handler received a signal, so library use is unaffected.
    """
    if _state["signal"] and _state["finished"] is None and not _state["closing"]:
        raise KeyboardInterrupt


def finished(what: str) -> None:
    """The command's result (`what`, e.g. the ticket path) is safely written: a stop request from
    now on is reported and the command still exits 0."""
    _state["finished"] = str(what)


def finished_what() -> str | None:
    return _state["finished"]


def noted() -> None:
    """The user was told that a late signal changed nothing (printed once)."""
    _state["noted"] = True


def closing() -> None:
    """The outcome is decided: signals from now on are recorded, never raised."""
    _state["closing"] = True


def message(signum: int) -> tuple[str, str]:
    """(what happened, what to do): the one line an interrupted command prints, saying only what it had saved."""
    what = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted"
    return what, KEPT[_state["keeps"]]


def installed() -> bool:
    """True when ticketx's handler is the current SIGINT or SIGTERM handler."""
    return any(signal.getsignal(s) is _handler for s in SIGNALS)


def _install() -> dict[int, Any]:
    """Install the handler for SIGINT and SIGTERM with a fresh state; the previous handlers.

    Only the main thread can install handlers; elsewhere (embedded use) signals are left alone.
    A signal the parent set to be ignored (`nohup`, background jobs) stays ignored.
    """
    _state.update(signal=0, finished=None, closing=False, noted=False,
                  keeps=KEEPS.get(command_of(sys.argv[1:]), "nothing"))
    previous: dict[int, Any] = {}
    try:
        for s in SIGNALS:
            if signal.getsignal(s) is signal.SIG_IGN:
                continue
            previous[s] = signal.signal(s, _handler)
    except ValueError:  # not the main thread
        pass
    return previous


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Run the block with ticketx's SIGINT/SIGTERM handler, restoring the previous ones after.

    Nested use keeps the outer state (a signal recorded during start-up stays pending).
    """
    if installed():
        yield
        return
    previous = _install()
    hook = sys.unraisablehook
    if previous and not getattr(hook, "ticketx", False):
        sys.unraisablehook = _unraisable(hook)
    try:
        yield
    finally:
        sys.unraisablehook = hook
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def ignore_from_now() -> None:
    """The process is about to exit with a decided code: later signals must neither raise in a
    finaliser nor kill it with their default action while the interpreter shuts down."""
    closing()
    with contextlib.suppress(ValueError):
        for s in SIGNALS:
            if signal.getsignal(s) in (_handler, signal.default_int_handler, signal.SIG_DFL):
                signal.signal(s, signal.SIG_IGN)


def run(command: Callable[[], None]) -> NoReturn:
    """Run `command` (the CLI: `ticketx.__main__.entry`) with the handler installed before its imports."""
    if _install():  # before the CLI's imports (typer, rich: a few hundred ms); never restored
        sys.unraisablehook = _unraisable(sys.unraisablehook)
    code: Any = 0
    try:
        command()
    except SystemExit as exc:
        code = exc.code
    except KeyboardInterrupt:  # during start-up, before main() could handle it
        closing()
        what, todo = message(requested() or signal.SIGINT)
        sys.stderr.write(f"{what}: {todo}\n")
        code = 128 + (requested() or signal.SIGINT)
    ignore_from_now()
    if code in (0, None) and requested() and not _state["noted"]:
        sys.stderr.write(f"{message(requested())[0]} after the command had finished: its results are complete; nothing to resume.\n")
    if code is None:
        code = 0
    elif not isinstance(code, int):
        sys.stderr.write(f"{code}\n")
        code = 1
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    # CPython (bpo-1054041) kills a `python -m` process with SIGINT at exit (-2 instead of our
    # code) when a KeyboardInterrupt once propagated out of exec/eval of a *string* (dataclass
    # and namedtuple creation during an import do that), even if it was handled later. Each
    # such exec resets that flag first: one empty exec clears it.
    exec("")  # noqa: S102 - resets CPython's unhandled-KeyboardInterrupt flag, runs nothing
    sys.exit(code)
