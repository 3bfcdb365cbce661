"""A batch job on another runtime: ``WorkSpec(backend=...)`` opens each worker's session on it
(onnx's pure-Python reference evaluator here) and gives ONNX Runtime's rows within float tolerance."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd

from estimator.method import Method
from service.batch.job import BatchJob, run_batch
from service.batch.model import BatchModel
from service.batch.sources import open_source
from service.batch.work import WorkSpec
from tests.test_models.reference_backend import ReferenceBackend


def _rows(model: BatchModel, data: Path, out: Path, backend: ReferenceBackend | None) -> pd.DataFrame:
    spec = WorkSpec(
        model=model,
        source=open_source(data, model),
        method=Method(samples=8),
        target=None,
        seed=11,
        backend=backend,
    )
    summary = run_batch(BatchJob(spec, out, block_rows=16))
    assert summary.complete and summary.failed == 0
    return pd.read_parquet(out / "data").sort_values("id").reset_index(drop=True)


def test_a_batch_job_runs_on_the_backend_of_its_spec(
    mlp: BatchModel, cancer_csv: Path, tmp_path: Path
) -> None:
    backend = ReferenceBackend()
    pickle.dumps(backend)  # the process and Ray engines send it to their workers
    expected = _rows(mlp, cancer_csv, tmp_path / "ort", None)
    got = _rows(mlp, cancer_csv, tmp_path / "reference", backend)
    assert set(got["provider"]) == {"onnx.reference"} and set(expected["provider"]) != {"onnx.reference"}
    assert backend.opened and all(model.runs for model in backend.opened)
    assert list(got["seed"]) == list(expected["seed"])
    attribution = np.stack([np.asarray(a) for a in got["attribution"]])
    reference = np.stack([np.asarray(a) for a in expected["attribution"]])
    np.testing.assert_allclose(attribution, reference, rtol=1e-4, atol=1e-6)
    assert np.abs(reference).max() > 1e-3
