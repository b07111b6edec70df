"""Run one process of the local stack and start it again when it dies, as SageMaker would.

honcho stops the whole stack when one of its processes exits. For the containers and their
model backends that is wrong: a deployed endpoint replaces a crashed container while the rest
of the system keeps serving (the front door answers with its documented upstream errors
meanwhile). ``local/Procfile`` therefore starts those processes through this wrapper::

    python -m local.stack.restart_on_exit --name chat -- python -m inference_server serve ...

Every exit is reported on stdout (the signal or code, and when the restart happens). A command
that keeps dying within :data:`QUICK_EXIT_S` of its start :data:`MAX_QUICK_EXITS` times in a row
is given up on, and the wrapper exits with its status, so honcho stops the stack as before: a
broken command stays loud. SIGTERM or SIGINT (honcho signals the whole process group) stops the
restarts; the wrapper waits for the command and exits with its status.

Why not a library: supervisord and circus are daemons with their own configuration and control
sockets; the stack needs one restart loop inside a honcho process, which is this module.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType

__all__ = ["MAX_QUICK_EXITS", "QUICK_EXIT_S", "describe_exit", "main", "restart_delay_s", "run"]

QUICK_EXIT_S = 10.0
"""A run shorter than this counts as a quick exit (a command that cannot start)."""
MAX_QUICK_EXITS = 5
"""Quick exits in a row after which the wrapper gives up and exits itself."""
FIRST_DELAY_S = 0.2
MAX_DELAY_S = 5.0


def describe_exit(returncode: int) -> str:
    """Say how a child ended: ``killed by SIGKILL`` or ``exited with 1``."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with {returncode}"


def restart_delay_s(quick_exits: int) -> float:
    """Wait before the next start: short after a crash, doubling while it keeps crashing."""
    return float(min(FIRST_DELAY_S * 2 ** max(quick_exits - 1, 0), MAX_DELAY_S))


def run(
    name: str,
    command: Sequence[str],
    *,
    stopping: threading.Event,
    say: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Run ``command`` until ``stopping`` is set, starting it again each time it dies.

    Parameters
    ----------
    name
        The process's name in the messages (its Procfile name).
    command
        The program and its arguments.
    stopping
        Set (by a signal handler) when the stack shuts down: no more restarts.
    say
        Where the exit and restart messages go.
    clock
        Monotonic seconds, to tell quick exits from crashes after a long run.

    Returns
    -------
    int
        The exit status to leave with: the command's last status (128 + signal when killed).
    """
    quick_exits = 0
    while True:
        started = clock()
        child = subprocess.Popen(list(command))
        say(f"{name}: started pid {child.pid}")
        returncode = child.wait()
        status = 128 - returncode if returncode < 0 else returncode
        if stopping.is_set():
            return status
        quick_exits = quick_exits + 1 if clock() - started < QUICK_EXIT_S else 1
        if quick_exits >= MAX_QUICK_EXITS:
            say(
                f"{name}: {describe_exit(returncode)}; it died within {QUICK_EXIT_S:g} s of "
                f"starting {quick_exits} times in a row, giving up"
            )
            return status or 1
        delay = restart_delay_s(quick_exits)
        say(f"{name}: {describe_exit(returncode)}; restarting in {delay:g} s")
        if stopping.wait(delay):
            return status


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m local.stack.restart_on_exit --name NAME -- COMMAND...``."""
    parser = argparse.ArgumentParser(
        prog="python -m local.stack.restart_on_exit", description=__doc__
    )
    parser.add_argument("--name", required=True, help="the process's name in messages")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given after --")
    stopping = threading.Event()

    def stop(signum: int, _frame: FrameType | None) -> None:
        # The child is in the same process group, so honcho's killpg reached it too.
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return run(args.name, command, stopping=stopping, say=lambda line: print(line, flush=True))


if __name__ == "__main__":
    sys.exit(main())
