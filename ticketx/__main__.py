"""`python -m ticketx` and the `ticketx` executable: the signal handler first, then the CLI.

The handler is installed before the CLI's imports (ticketx.interrupt.run), so a Ctrl-C during
start-up is handled like any other.
"""

from ticketx.interrupt import run


def _cli() -> None:
    from ticketx.cli import main

    main()


def entry() -> None:
    run(_cli)


if __name__ == "__main__":
    entry()
