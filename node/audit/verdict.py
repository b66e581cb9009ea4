"""What the offline verification of a log concludes: one verdict, every problem listed.

Verdicts and exit codes
-----------------------
``OK`` 0 · ``TAMPERED`` 3 · ``TRUNCATED`` 4 · ``FORK`` 5 · ``UNKNOWN_KEY`` 6 · ``STALE`` 7 ·
``EMPTY`` 8 (missing or empty log, or nothing signed: never OK) · ``UNSIGNED_TAIL`` 10
(entries after the newest signed checkpoint: nothing vouches for them yet, so never OK —
issue 13). When several problems are found the most severe wins: FORK > TAMPERED >
TRUNCATED > UNKNOWN_KEY > UNSIGNED_TAIL > STALE > EMPTY; every problem is listed in the
report. (9 is ``hedui audit reconcile``'s "discrepancies".)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Verdict", "Problem", "VerifyReport"]


class Verdict(enum.IntEnum):
    """Outcome of :func:`verify`; the value is the CLI exit code."""

    OK = 0
    TAMPERED = 3
    TRUNCATED = 4
    FORK = 5
    UNKNOWN_KEY = 6
    STALE = 7
    EMPTY = 8
    UNSIGNED_TAIL = 10


_SEVERITY = [Verdict.FORK, Verdict.TAMPERED, Verdict.TRUNCATED, Verdict.UNKNOWN_KEY, Verdict.UNSIGNED_TAIL,
             Verdict.STALE, Verdict.EMPTY]


@dataclass(frozen=True)
class Problem:
    verdict: Verdict
    message: str


@dataclass
class VerifyReport:
    """What :func:`verify` found. ``verdict`` is the most severe problem, or OK."""

    verdict: Verdict = Verdict.OK
    origin: str | None = None
    start: int = 0
    entries: int = 0
    tree_size: int = 0
    checkpoints: int = 0
    checkpoints_verified: int = 0
    cosignatures: int = 0
    latest_checkpoint_size: int | None = None
    latest_checkpoint_time: int | None = None
    #: The signed note of the newest checkpoint, when the entries re-derive its root: what an
    #: officer keeps as the next ``--trusted-checkpoint`` (``audit verify --save-checkpoint``).
    latest_checkpoint_note: str | None = None
    unsigned_tail: int = 0
    peer_forks: int = 0
    #: Checkpoints of this log that peers cosigned and that verified (trusted sizes).
    witnessed: int = 0
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.OK

    def _add(self, verdict: Verdict, message: str) -> None:
        if len(self.problems) < 200:
            self.problems.append(Problem(verdict, message))
        elif not any(p.message.startswith("(more problems") for p in self.problems):
            self.problems.append(Problem(verdict, "(more problems not listed)"))
        if self.verdict is Verdict.OK or _SEVERITY.index(verdict) < _SEVERITY.index(self.verdict):
            self.verdict = verdict

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.name,
            "exit_code": int(self.verdict),
            "origin": self.origin,
            "start": self.start,
            "entries": self.entries,
            "tree_size": self.tree_size,
            "checkpoints": self.checkpoints,
            "checkpoints_verified": self.checkpoints_verified,
            "cosignatures": self.cosignatures,
            "latest_checkpoint_size": self.latest_checkpoint_size,
            "latest_checkpoint_time": self.latest_checkpoint_time,
            "unsigned_tail": self.unsigned_tail,
            "peer_forks": self.peer_forks,
            "witnessed": self.witnessed,
            "problems": [{"verdict": p.verdict.name, "message": p.message} for p in self.problems],
            "notes": list(self.notes),
        }
