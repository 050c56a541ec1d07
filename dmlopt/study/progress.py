"""Progress on stderr: a bar over a loss's trials, with the fold and epoch in flight."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


class Progress:
    """One bar per loss; :meth:`epoch` is the listener fold training calls after validation."""

    def __init__(self, label: str, total: int) -> None:
        self.bar = tqdm(total=total, desc=label, unit="step", file=sys.stderr, dynamic_ncols=True)
        self.where = ""

    def at(self, where: str) -> None:
        self.where = where
        self.bar.set_postfix_str(where)

    def epoch(self, epoch: int, score: float) -> None:
        self.bar.set_postfix_str(f"{self.where} epoch {epoch + 1} val MAP@R {score:.4f}")

    def advance(self, note: str = "") -> None:
        self.bar.update(1)
        if note:
            self.bar.set_postfix_str(note)

    def close(self) -> None:
        self.bar.close()
