"""The Ray engine: blocks explained by a Ray Data actor pool, each actor holding one session.

The dataset Ray Data sees is the list of pending block indices; each actor reads its blocks from
the source itself (so on a cluster the data and the gradient-graph cache must be on storage every
node sees) and returns each :class:`BlockResult` pickled. The driver receives results as blocks
finish and commits them, so output is written by one process only. Actors that die are restarted
and their blocks retried by Ray (``max_restarts``/``max_task_retries``); as every row has its own
seed, a retried block gives the same numbers.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from service.batch.sources import BlockSpec
from service.batch.work import BlockResult, BlockWorker, WorkSpec

__all__ = ["RAY_INSTALL_HINT", "RayMissingError", "import_ray", "run_ray"]

RAY_INSTALL_HINT = (
    "--engine ray needs Ray Data, which is not installed: pip install 'mollify[ray]' (in a checkout: "
    'pip install -e ".[ray]"), or use --engine local'
)


class RayMissingError(ImportError):
    """Ray (with Ray Data) is not installed."""


def import_ray() -> Any:
    """``ray`` with ``ray.data`` loaded.

    Raises:
        RayMissingError: Ray or Ray Data is missing (the message says how to install it).
    """
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data is an extra of Ray
    except ImportError as err:
        raise RayMissingError(RAY_INSTALL_HINT) from err
    return ray


class _RayBlockWorker:
    """A Ray Data actor: one :class:`BlockWorker`, one block per call."""

    def __init__(self, spec: WorkSpec, blocks: dict[int, BlockSpec]) -> None:
        self._worker = BlockWorker(spec)
        self._blocks = blocks

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = [pickle.dumps(self._worker(self._blocks[int(i)])) for i in batch["block"]]
        return {"block": np.asarray(batch["block"]), "result": np.asarray(results, dtype=object)}


def run_ray(
    spec: WorkSpec,
    blocks: Sequence[BlockSpec],
    on_result: Callable[[BlockResult], None],
    *,
    workers: int = 1,
    address: str | None = None,
) -> None:
    """Explain ``blocks`` on Ray and hand each result to ``on_result`` in this process.

    Uses the Ray instance already initialised in this process, else connects to ``address`` (an
    existing cluster), else starts a local instance (stopped again at the end).

    Raises:
        RayMissingError: Ray is not installed.
        ConnectionError: no cluster answers at ``address``.
    """
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        options: dict[str, Any] = {
            "include_dashboard": False,
            "logging_level": logging.WARNING,
            "log_to_driver": False,
        }
        if address:
            ray.init(address=address, **options)
        else:
            ray.init(num_cpus=max(1, workers), **options)
        started = True
    try:
        if not blocks:
            return
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        dataset = ray.data.from_items([{"block": b.index} for b in blocks], override_num_blocks=len(blocks))
        explained = dataset.map_batches(
            _RayBlockWorker,
            batch_size=1,
            batch_format="numpy",
            # Ray Data restarts dead actors and retries their tasks by default (max_restarts=-1).
            compute=ray.data.ActorPoolStrategy(size=max(1, workers)),
            num_cpus=1,
            fn_constructor_kwargs={"spec": spec, "blocks": {b.index: b for b in blocks}},
        )
        for batch in explained.iter_batches(batch_size=1, batch_format="numpy"):
            for payload in batch["result"]:
                on_result(pickle.loads(payload))
    finally:
        if started:
            ray.shutdown()
