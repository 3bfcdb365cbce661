"""The local engine: blocks explained on this machine, by worker processes each holding one session.

With one worker the blocks run in this process. With more, a pool of ``workers`` processes
(``spawn``: no onnxruntime state is ever forked) keeps at most two blocks per worker in flight, so
memory stays bounded whatever the dataset's size; results come back as blocks finish. A worker
process that dies (killed, out of memory) breaks the pool: a new pool is started and the blocks
that were in flight are run again, up to ``max_restarts`` times.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from service.batch.sources import BlockSpec
from service.batch.work import BlockResult, BlockWorker, WorkSpec

__all__ = ["WorkerLostError", "run_local"]

_worker: BlockWorker | None = None


class WorkerLostError(RuntimeError):
    """Worker processes kept dying: the job stops after ``max_restarts`` new pools."""


def _start_worker(spec: WorkSpec) -> None:
    global _worker
    _worker = BlockWorker(spec)


def _run_block(block: BlockSpec) -> BlockResult:
    assert _worker is not None, "the pool's initializer did not run"
    return _worker(block)


def run_local(
    spec: WorkSpec,
    blocks: Sequence[BlockSpec],
    on_result: Callable[[BlockResult], None],
    *,
    workers: int = 1,
    worker: BlockWorker | None = None,
    max_restarts: int = 3,
) -> None:
    """Explain ``blocks`` and hand each :class:`BlockResult` to ``on_result`` (in this process).

    Args:
        workers: processes; 1 runs in this process with ``worker`` (or a new one).
        max_restarts: new pools started after worker processes died, before giving up.

    Raises:
        WorkerLostError: worker processes died more than ``max_restarts`` times.
        Any error a block raises (a model that fails to open stops the job).
    """
    if workers <= 1:
        local = worker or BlockWorker(spec)
        for block in blocks:
            on_result(local(block))
        return
    pending = deque(blocks)
    restarts = 0
    context = multiprocessing.get_context("spawn")
    while pending:
        in_flight: dict[Future[BlockResult], BlockSpec] = {}
        try:
            with ProcessPoolExecutor(
                workers, mp_context=context, initializer=_start_worker, initargs=(spec,)
            ) as pool:
                while pending or in_flight:
                    while pending and len(in_flight) < 2 * workers:
                        block = pending.popleft()
                        in_flight[pool.submit(_run_block, block)] = block
                    done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    for future in done:
                        result = future.result()
                        del in_flight[future]
                        on_result(result)
        except BrokenProcessPool as err:
            restarts += 1
            if restarts > max_restarts:
                raise WorkerLostError(
                    f"worker processes died {restarts} times (killed or out of memory?); fewer --workers or a "
                    "smaller --block-rows may help"
                ) from err
            pending.extendleft(sorted(in_flight.values(), key=lambda b: b.index, reverse=True))
