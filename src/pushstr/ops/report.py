"""One line per check: a status, what was checked, what was found and, when it is not fine, what to do.

Operators read these lines in a terminal and paste them into bug reports, so they state facts in a fixed shape,
name the config key or file concerned, and never carry a secret (keys, tokens, passwords).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True, slots=True)
class Check:
    """The result of one check; `advice` says what to do about a warning or a failure."""

    status: Status
    subject: str
    detail: str
    advice: str = ""

    def line(self) -> str:
        text = f"{self.status:<4}  {self.subject}: {self.detail}"
        return f"{text} — {self.advice}" if self.advice else text


def ok(subject: str, detail: str) -> Check:
    return Check(Status.OK, subject, detail)


def warn(subject: str, detail: str, advice: str = "") -> Check:
    return Check(Status.WARN, subject, detail, advice)


def fail(subject: str, detail: str, advice: str = "") -> Check:
    return Check(Status.FAIL, subject, detail, advice)


def exit_code(checks: Iterable[Check]) -> int:
    """0 when nothing failed (warnings included), 1 when something did."""
    return 1 if any(check.status is Status.FAIL for check in checks) else 0


def shown_text(text: str, limit: int = 160) -> str:
    """Text from elsewhere (an exception, a relay's reason) on one line and short enough to read."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def file_mode_problem(mode: int) -> str | None:
    """Why a file holding a secret is too open (any group or other permission), or None when it is private."""
    if mode & 0o077:
        return f"mode {mode & 0o777:04o} lets other users read it"
    return None
