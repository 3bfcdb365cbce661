"""``mollify batch --engine ray`` on a local Ray instance (2 CPUs): the local engine's numbers, bit for
bit, and an actor killed mid-job whose block is retried with every row written exactly once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from estimator.method import Method
from service.batch.job import BatchJob, run_batch
from service.batch.model import BatchModel
from service.batch.sources import open_source
from service.batch.work import WorkSpec

ray = pytest.importorskip("ray", reason='the ray extra is not installed (pip install -e ".[ray]")')

HERE = Path(__file__).resolve().parent
METHOD = Method(samples=8)


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def rows(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "data").sort_values("id").reset_index(drop=True)


def maps(frame: pd.DataFrame, column: str = "attribution") -> np.ndarray:
    return np.stack([np.asarray(a) for a in frame[column]])


def spec(model: BatchModel, data: Path) -> WorkSpec:
    return WorkSpec(model=model, source=open_source(data, model), method=METHOD, target=None, seed=11)


def test_ray_engine_gives_the_local_engines_numbers(
    mlp: BatchModel, cancer_csv: Path, tmp_path: Path
) -> None:
    local = run_batch(BatchJob(spec(mlp, cancer_csv), tmp_path / "local", block_rows=16))
    remote = run_batch(
        BatchJob(spec(mlp, cancer_csv), tmp_path / "ray", block_rows=6, engine="ray", workers=2)
    )
    assert local.explained == remote.explained == 40 and remote.blocks == 7
    a, b = rows(tmp_path / "local"), rows(tmp_path / "ray")
    assert list(b["id"]) == list(range(40))
    np.testing.assert_array_equal(maps(a), maps(b))
    np.testing.assert_array_equal(maps(a, "standard_error"), maps(b, "standard_error"))
    assert list(a["seed"]) == list(b["seed"]) and list(a["target"]) == list(b["target"])


def test_actor_killed_mid_job_is_retried_and_rows_written_once(
    mlp: BatchModel, cancer_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(HERE))
    import batch_helpers  # type: ignore[import-not-found]
    from ray import cloudpickle  # Ray's own copy pickles what actors receive

    cloudpickle.register_pickle_by_value(batch_helpers)
    marker = tmp_path / "crashed"
    base = spec(mlp, cancer_csv)
    crashing = WorkSpec(**{**base.__dict__, "source": batch_helpers.CrashOnceSource(base.source, 3, marker)})
    summary = run_batch(BatchJob(crashing, tmp_path / "ray", block_rows=8, engine="ray", workers=2))
    assert marker.exists(), "no actor crashed: the test tests nothing"
    assert summary.explained == 40 and summary.complete
    run_batch(BatchJob(base, tmp_path / "local", block_rows=8))
    got = rows(tmp_path / "ray")
    assert list(got["id"]) == list(range(40))
    np.testing.assert_array_equal(maps(got), maps(rows(tmp_path / "local")))
