"""``mollify batch`` on the local engine: sources, determinism, bad rows, resumption, worker loss, CLI."""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from estimator import explain
from estimator.method import Method, PredictedClassTarget
from models.runtime import GradientSession
from service.batch.job import BatchJob, run_batch
from service.batch.model import BatchModel
from service.batch.output import JobConflictError
from service.batch.seeds import row_seed
from service.batch.sources import open_source
from service.batch.work import WorkSpec
from service.cli import main

METHOD = Method(samples=8)
HERE = Path(__file__).resolve().parent


def spec_for(model: BatchModel, data: Path, seed: int = 11, **options: object) -> WorkSpec:
    return WorkSpec(
        model=model, source=open_source(data, model), method=METHOD, target=None, seed=seed, **options
    )  # type: ignore[arg-type]


def read_rows(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "data").sort_values("id").reset_index(drop=True)


def attributions(frame: pd.DataFrame) -> np.ndarray:
    return np.stack([np.asarray(a) for a in frame["attribution"]])


@pytest.fixture(scope="module")
def reference(mlp: BatchModel, cancer_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("reference") / "out"
    summary = run_batch(BatchJob(spec_for(mlp, cancer_csv), out, block_rows=16))
    assert summary.explained == 40 and summary.failed == 0 and summary.complete
    return read_rows(out)


def test_csv_rows_equal_the_estimator_with_per_row_seeds(
    mlp: BatchModel, cancer_csv: Path, reference: pd.DataFrame
) -> None:
    assert list(reference["id"]) == list(range(40))
    raw = np.loadtxt(cancer_csv, delimiter=",", skiprows=1)[:, :30]
    pre = mlp.preprocessing
    inputs = ((raw * pre.scale - np.asarray(pre.mean)) / np.asarray(pre.std)).astype(np.float32)
    session = GradientSession(mlp.graph_path, intra_op_threads=1)
    for row in (0, 17, 39):
        expected = explain(
            session,
            inputs[row],
            METHOD,
            PredictedClassTarget(),
            lower=mlp.lower,
            upper=mlp.upper,
            seed=row_seed(11, row),
        )
        got = reference.iloc[row]
        assert got["seed"] == row_seed(11, row) == expected.seed
        np.testing.assert_array_equal(np.asarray(got["attribution"]), expected.attribution.astype(np.float32))
        np.testing.assert_array_equal(
            np.asarray(got["standard_error"]), expected.standard_error.astype(np.float32)
        )
        assert got["target"] == expected.target_index and got["samples"] == 8
        assert got["relative_error"] == pytest.approx(expected.relative_error)
    assert len(set(reference["seed"])) == 40  # every row its own seed


def test_block_size_and_worker_processes_do_not_change_a_bit(
    mlp: BatchModel, cancer_csv: Path, reference: pd.DataFrame, tmp_path: Path
) -> None:
    summary = run_batch(BatchJob(spec_for(mlp, cancer_csv), tmp_path / "out", block_rows=7, workers=2))
    assert summary.blocks == 6 and summary.explained == 40
    got = read_rows(tmp_path / "out")
    np.testing.assert_array_equal(attributions(got), attributions(reference))
    assert list(got["seed"]) == list(reference["seed"])


def test_worker_process_killed_mid_job_is_replaced_and_rows_written_once(
    mlp: BatchModel,
    cancer_csv: Path,
    reference: pd.DataFrame,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(HERE), *sys.path])
    )  # spawned workers import the helper
    from batch_helpers import CrashOnceSource

    marker = tmp_path / "crashed"
    spec = spec_for(mlp, cancer_csv)
    spec = WorkSpec(**{**spec.__dict__, "source": CrashOnceSource(spec.source, 2, marker)})
    summary = run_batch(BatchJob(spec, tmp_path / "out", block_rows=8, workers=2))
    assert marker.exists(), "the worker never crashed: the test tests nothing"
    assert summary.explained == 40 and summary.complete
    got = read_rows(tmp_path / "out")
    assert list(got["id"]) == list(range(40))  # every row exactly once
    np.testing.assert_array_equal(attributions(got), attributions(reference))


def test_resume_after_interrupt_skips_finished_blocks(
    mlp: BatchModel, cancer_csv: Path, reference: pd.DataFrame, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    calls: list[int] = []

    def interrupt(done: int, total: int, finished: int) -> None:
        calls.append(done)
        if done >= 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_batch(BatchJob(spec_for(mlp, cancer_csv), out, block_rows=10), on_progress=interrupt)
    first = {p.name: p.stat().st_mtime_ns for p in (out / "data").iterdir()}
    assert sorted(first) == ["part-000000.parquet", "part-000001.parquet"]
    summary = run_batch(BatchJob(spec_for(mlp, cancer_csv), out, block_rows=10))
    assert summary.blocks_skipped == 2 and summary.rows_this_run == 20 and summary.explained == 40
    assert {p.name: p.stat().st_mtime_ns for p in (out / "data").iterdir() if p.name in first} == first
    got = read_rows(out)
    assert list(got["id"]) == list(range(40))
    np.testing.assert_array_equal(attributions(got), attributions(reference))
    again = run_batch(BatchJob(spec_for(mlp, cancer_csv), out, block_rows=10))
    assert again.rows_this_run == 0 and len(read_rows(out)) == 40
    with pytest.raises(JobConflictError, match="block_rows"):
        run_batch(BatchJob(spec_for(mlp, cancer_csv), out, block_rows=5))


def test_bad_rows_land_in_the_errors_file(
    mlp: BatchModel, cancer_csv: Path, reference: pd.DataFrame, tmp_path: Path
) -> None:
    lines = cancer_csv.read_text().splitlines()
    cells = lines[3].split(",")
    lines[3] = ",".join(cells[:10])  # row 2: too few columns
    lines[5] = ",".join(["nan", *lines[5].split(",")[1:]])  # row 4: NaN
    lines[6] = ",".join(["abc", *lines[6].split(",")[1:]])  # row 5: not a number
    data = tmp_path / "bad.csv"
    data.write_text("\n".join(lines) + "\n")
    summary = run_batch(BatchJob(spec_for(mlp, data), tmp_path / "out", block_rows=16))
    assert summary.explained == 37 and summary.failures_by_reason == {
        "not_a_number": 1,
        "not_finite": 1,
        "wrong_width": 1,
    }
    with (tmp_path / "out" / "errors.csv").open() as handle:
        errors = list(csv.DictReader(handle))
    assert [(int(e["id"]), e["reason"]) for e in errors] == [
        (2, "wrong_width"),
        (4, "not_finite"),
        (5, "not_a_number"),
    ]
    assert "line 4" in errors[0]["source"] and "'abc'" in errors[2]["message"]
    got = read_rows(tmp_path / "out")
    assert 2 not in set(got["id"]) and len(got) == 37
    kept = reference[reference["id"].isin(got["id"])]
    np.testing.assert_array_equal(attributions(got), attributions(kept))


def test_digits_from_npy_npz_and_an_image_folder(cnn: BatchModel, digits: np.ndarray, tmp_path: Path) -> None:
    np.save(tmp_path / "digits.npy", digits[:20])
    np.savez_compressed(tmp_path / "digits.npz", a=digits[:12], b=digits[12:20])
    from_npy = run_batch(BatchJob(spec_for(cnn, tmp_path / "digits.npy"), tmp_path / "npy", block_rows=6))
    from_npz = run_batch(
        BatchJob(spec_for(cnn, tmp_path / "digits.npz"), tmp_path / "npz", block_rows=5, format="npz")
    )
    assert from_npy.explained == from_npz.explained == 20
    parquet = pq.read_table(tmp_path / "npy" / "data").sort_by("id")
    npy_maps = parquet.column("attribution").combine_chunks().to_numpy_ndarray()
    assert npy_maps.shape == (20, 1, 8, 8)
    shards = [np.load(p) for p in sorted((tmp_path / "npz" / "data").glob("*.npz"))]
    npz_maps = np.concatenate([s["attribution"] for s in shards])
    assert list(np.concatenate([s["id"] for s in shards])) == list(range(20))
    np.testing.assert_array_equal(npz_maps, npy_maps)
    assert [str(s).rsplit("/", 1)[-1] for s in shards[2]["source"]][1:3] == [
        "digits.npz[a][11]",
        "digits.npz[b][0]",
    ]

    from PIL import Image

    folder = tmp_path / "images"
    (folder / "more").mkdir(parents=True)
    for i in range(5):
        pixels = (255 - digits[i, 0] * 240).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / ("more" if i > 2 else ".") / f"digit_{i}.png")
    (folder / "broken.png").write_bytes(b"not an image")
    summary = run_batch(BatchJob(spec_for(cnn, folder), tmp_path / "img", block_rows=4))
    assert summary.rows == 6 and summary.explained == 5 and summary.failures_by_reason == {"unreadable": 1}
    errors = (tmp_path / "img" / "errors.csv").read_text()
    assert "broken.png" in errors and "unreadable" in errors
    sources = list(read_rows(tmp_path / "img")["source"])
    assert sources[-1].endswith("more/digit_4.png")


def test_cli_batch_writes_parquet_a_user_can_read(
    cancer_csv: Path, batch_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code = main(
        [
            "batch",
            "-m",
            "breast_cancer_mlp",
            str(cancer_csv),
            "-o",
            str(out),
            "--samples",
            "8",
            "--seed",
            "11",
            "--cache-dir",
            str(batch_cache),
            "--workers",
            "1",
            "--block-rows",
            "16",
        ]
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "explained 40 of 40 rows (0 failed)" in printed.out and "rows/s" in printed.out
    frame = pd.read_parquet(out / "data")
    assert len(frame) == 40 and set(frame["prediction"]) <= {0, 1} and (frame["relative_error"] > 0).all()
    assert np.asarray(frame["attribution"].iloc[0]).shape == (30,)


def test_cli_onnx_file_without_config_needs_bounds(
    cancer_csv: Path, batch_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from models.demo import repository_path

    model = tmp_path / "mlp.onnx"
    model.write_bytes((repository_path() / "breast_cancer_mlp" / "model.onnx").read_bytes())
    data = tmp_path / "x.npy"
    np.save(data, np.zeros((3, 30), np.float32))
    base = ["batch", "-m", str(model), str(data), "--samples", "4", "--cache-dir", str(batch_cache)]
    assert main([*base, "-o", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("BAD_MODEL: ") and "give --lower and --upper" in err
    assert main([*base, "-o", str(tmp_path / "b"), "--lower", "-3", "--upper", "3", "--workers", "1"]) == 0
    assert "explained 3 of 3 rows" in capsys.readouterr().out


def test_cli_model_that_fails_to_load_stops_at_once(
    tmp_path: Path, batch_cache: Path, digits: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    from models.demo import repository_path

    broken = tmp_path / "repo" / "broken"
    broken.mkdir(parents=True)
    (broken / "model.onnx").write_bytes(b"\x08garbage")
    (broken / "config.json").write_text((repository_path() / "digits_cnn" / "config.json").read_text())
    np.save(tmp_path / "x.npy", digits[:2])
    code = main(
        [
            "batch",
            "-m",
            "broken",
            str(tmp_path / "x.npy"),
            "-o",
            str(tmp_path / "out"),
            "--model-repository",
            str(tmp_path / "repo"),
            "--cache-dir",
            str(batch_cache),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("BAD_MODEL: ") and "model.onnx" in err
    assert not (tmp_path / "out").exists()


def test_cli_engine_ray_without_ray_says_how_to_install(
    cancer_csv: Path,
    batch_cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    code = main(
        [
            "batch",
            "-m",
            "breast_cancer_mlp",
            str(cancer_csv),
            "-o",
            str(tmp_path / "out"),
            "--engine",
            "ray",
            "--samples",
            "4",
            "--cache-dir",
            str(batch_cache),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("MISSING_DEPENDENCY: --engine ray needs Ray") and 'pip install -e ".[ray]"' in err
    assert not (tmp_path / "out").exists()
