"""One result line per check (``ok`` / ``FAIL`` / ``note``) and the exit code they add up to."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = ["CheckResult", "Status", "exit_code", "fail", "note", "ok", "print_results"]

Status = Literal["ok", "FAIL", "note"]


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one check.

    Attributes
    ----------
    name:
        Short check name, e.g. ``bootstrap`` or ``quota ml.g5.2xlarge endpoint``.
    status:
        ``ok``, ``FAIL`` (deploying would fail; the message says the fix) or ``note`` (could not
        be checked from here; the message says what to verify by hand).
    message:
        What was verified, or the fix.
    """

    name: str
    status: Status
    message: str

    @property
    def line(self) -> str:
        """The one line printed for this result."""
        return f"{self.status:<4}  {self.name}: {self.message}"


def ok(name: str, message: str) -> CheckResult:
    """A passed check."""
    return CheckResult(name, "ok", message)


def fail(name: str, message: str) -> CheckResult:
    """A failed check; ``message`` names the fix."""
    return CheckResult(name, "FAIL", message)


def note(name: str, message: str) -> CheckResult:
    """A check that cannot be made from here; ``message`` says what to verify by hand."""
    return CheckResult(name, "note", message)


def print_results(results: Iterable[CheckResult]) -> list[CheckResult]:
    """Print one line per result as it comes and return them all.

    Parameters
    ----------
    results:
        Results, possibly produced lazily.

    Returns
    -------
    list[CheckResult]
        The results printed.
    """
    printed = []
    for result in results:
        print(result.line, flush=True)
        printed.append(result)
    return printed


def exit_code(results: Iterable[CheckResult]) -> int:
    """1 when any result failed, else 0."""
    return 1 if any(result.status == "FAIL" for result in results) else 0
