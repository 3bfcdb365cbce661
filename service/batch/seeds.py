"""Per-row seeds: row ``i`` of a job with seed ``s`` is explained with :func:`row_seed(s, i)`.

The seed depends only on ``(s, i)`` (numpy's ``SeedSequence`` hashing, O'Neill's design), so a
row's explanation is the same whatever the engine, block size, worker count or retry that
computes it, and distinct rows get statistically independent noise.
"""

from __future__ import annotations

import numpy as np

_SEED_MASK = (1 << 63) - 1


def row_seed(seed: int, row: int) -> int:
    """The 63-bit seed of row ``row`` (0-based, in dataset order) of a job seeded with ``seed``.

    Args:
        seed: the job's seed, an integer ≥ 0.
        row: the row's index in the dataset, ≥ 0.
    """
    if seed < 0 or row < 0:
        raise ValueError(f"seed and row must be ≥ 0, got seed={seed}, row={row}")
    state = np.random.SeedSequence(seed, spawn_key=(row,)).generate_state(1, np.uint64)
    return int(state[0]) & _SEED_MASK
