"""Seeds derived from a study's seed and a position (trial, fold, rerun), equal in all processes."""

from __future__ import annotations

import numpy as np


def derive_seed(*keys: int) -> int:
    """A 31-bit seed fixed by ``keys`` alone (unlike ``hash``, which varies between processes)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0] >> 1)
