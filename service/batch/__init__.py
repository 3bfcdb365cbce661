"""Offline explanations of whole datasets (``mollify batch``).

A dataset (CSV/Parquet table, image folder, ``.npy``/``.npz`` arrays) is read in blocks of rows
(:mod:`.sources`); each block is explained by a worker holding one gradient session
(:mod:`.work`), on this machine (:mod:`.engine_local`) or on a Ray cluster through Ray Data
(:mod:`.engine_ray`); finished blocks are written once each, with a manifest that lets a rerun
skip them (:mod:`.output`). Row ``i`` is explained with the seed :func:`.seeds.row_seed` derives
from ``(seed, i)``, so results do not depend on the engine, the block size, the workers or retries.
"""

from service.batch.job import BatchJob, BatchSummary, run_batch
from service.batch.seeds import row_seed

__all__ = ["BatchJob", "BatchSummary", "row_seed", "run_batch"]
