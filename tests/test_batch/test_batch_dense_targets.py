"""``mollify batch`` with region and detection targets: each row equals ``estimator.explain`` with the
same target and the row's seed; the job record describes the target; bad ``--region`` is a usage error."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from onnx import TensorProto, helper, numpy_helper

from estimator import explain
from estimator.method import DetectionTarget, Method, RegionTarget
from models.runtime import GradientSession
from service.batch.job import BatchJob, run_batch
from service.batch.model import BatchModel, resolve_model
from service.batch.seeds import row_seed
from service.batch.sources import open_source
from service.batch.work import WorkSpec
from service.cli import main

METHOD = Method(samples=8)
SEED = 11
CLASSES = 3
ANCHORS = 16  # the detector's 8×8 input becomes a 4×4 grid of anchors


def _rows(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "data").sort_values("id").reset_index(drop=True)


def _job_target(out: Path) -> object:
    return json.loads((out / "manifest.json").read_text())["job"]["target"]


def _detector(path: Path) -> Path:
    """A YOLOv8-style head: ``x [B, 1, 8, 8]`` → Conv 2×2 stride 2 → ``[B, 4 + C, 16]`` → box values as
    they are, sigmoid class scores → ``detections [B, 4 + C, 16]`` (channels first)."""
    rng = np.random.default_rng(1)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "W", "b"], ["grid"], kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("Reshape", ["grid", "flat_shape"], ["raw"]),
            helper.make_node("Split", ["raw", "split"], ["boxes", "logits"], axis=1),
            helper.make_node("Sigmoid", ["logits"], ["scores"]),
            helper.make_node("Concat", ["boxes", "scores"], ["detections"], axis=1),
        ],
        "detector",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("detections", TensorProto.FLOAT, ["batch", 4 + CLASSES, ANCHORS])],
        [
            numpy_helper.from_array(rng.normal(size=(4 + CLASSES, 1, 2, 2)).astype(np.float32), "W"),
            numpy_helper.from_array(rng.normal(size=(4 + CLASSES,)).astype(np.float32), "b"),
            numpy_helper.from_array(np.array([0, 4 + CLASSES, ANCHORS], np.int64), "flat_shape"),
            numpy_helper.from_array(np.array([4, CLASSES], np.int64), "split"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    path.write_bytes(model.SerializeToString())
    return path


def test_cli_region_sum_rows_equal_the_estimator(
    cnn: BatchModel, digits: np.ndarray, batch_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "digits.npy", digits[:6])
    out = tmp_path / "out"
    argv = ["batch", "-m", "digits_cnn", str(tmp_path / "digits.npy"), "-o", str(out), "--region", "3:5"]
    options = ["--samples", "8", "--seed", str(SEED), "--cache-dir", str(batch_cache), "--workers", "1"]
    code = main([*argv, *options, "--block-rows", "4"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "explained 6 of 6 rows (0 failed)" in printed.out
    rows = _rows(out)
    assert rows["target"].isna().all()  # a region explains no single class
    assert _job_target(out) == {"kind": "region", "region": "3:5", "reduction": "sum"}
    session = GradientSession(cnn.graph_path, intra_op_threads=1)
    region = RegionTarget(axes=(slice(3, 5),))
    for row in range(6):
        expected = explain(
            session, digits[row], METHOD, region, lower=cnn.lower, upper=cnn.upper, seed=row_seed(SEED, row)
        )
        np.testing.assert_array_equal(
            np.asarray(rows["attribution"].iloc[row]).reshape(1, 8, 8),
            expected.attribution.astype(np.float32),
        )
        np.testing.assert_array_equal(
            np.asarray(rows["standard_error"].iloc[row]).reshape(1, 8, 8),
            expected.standard_error.astype(np.float32),
        )
    # The same job with --region-mean is another job: it does not resume into this folder.
    assert main([*argv, *options, "--block-rows", "4", "--region-mean"]) != 0
    err = capsys.readouterr().err
    assert "another job (it differs in target)" in err, err


def test_detection_rows_equal_the_estimator_in_worker_processes(batch_cache: Path, tmp_path: Path) -> None:
    model = resolve_model(
        str(_detector(tmp_path / "detector.onnx")),
        repository=tmp_path,
        cache_dir=batch_cache,
        lower=0.0,
        upper=1.0,
    )
    inputs = np.random.default_rng(3).uniform(size=(6, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", inputs)
    target = DetectionTarget()  # the best detection and its best class, per row
    spec = WorkSpec(
        model=model, source=open_source(tmp_path / "x.npy", model), method=METHOD, target=target, seed=SEED
    )
    assert pickle.loads(pickle.dumps(spec)).target == target  # what the process and Ray engines send
    summary = run_batch(BatchJob(spec, tmp_path / "out", block_rows=2, workers=2))
    assert summary.explained == 6 and summary.failed == 0
    rows = _rows(tmp_path / "out")
    assert _job_target(tmp_path / "out") == {
        "kind": "detection",
        "detection": "best",
        "class": "best",
        "layout": "channels_first",
        "box_values": 4,
    }
    session = GradientSession(model.graph_path, intra_op_threads=1)
    for row in range(6):
        expected = explain(
            session,
            inputs[row],
            METHOD,
            target,
            lower=model.lower,
            upper=model.upper,
            seed=row_seed(SEED, row),
        )
        assert expected.target_index is not None and 0 <= expected.target_index < CLASSES
        assert rows["target"].iloc[row] == expected.target_index  # the detection's class
        np.testing.assert_array_equal(
            np.asarray(rows["attribution"].iloc[row]).reshape(1, 8, 8),
            expected.attribution.astype(np.float32),
        )


def test_cli_detection_flags_reach_the_rows(
    batch_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _detector(tmp_path / "detector.onnx")
    np.save(tmp_path / "x.npy", np.random.default_rng(4).uniform(size=(3, 1, 8, 8)).astype(np.float32))
    out = tmp_path / "out"
    code = main(
        [
            "batch",
            "-m",
            str(model),
            str(tmp_path / "x.npy"),
            "-o",
            str(out),
            "--lower",
            "0",
            "--upper",
            "1",
            "--detection",
            "5",
            "--detection-class",
            "2",
            "--samples",
            "4",
            "--seed",
            "1",
            "--cache-dir",
            str(batch_cache),
            "--workers",
            "1",
        ]
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert list(_rows(out)["target"]) == [2, 2, 2]
    assert _job_target(out) == {
        "kind": "detection",
        "detection": 5,
        "class": 2,
        "layout": "channels_first",
        "box_values": 4,
    }


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--region", "1;2"], "USAGE: --region: entry 0"),
        (["--region", "3", "--target", "2"], "USAGE: --target 2 and --region both say what to explain"),
        (["--region", "12"], "target.axes[0]: expected an index in [-10, 9]"),
        (["--detection"], "--detection does not fit model 'digits_cnn'"),
    ],
)
def test_cli_bad_dense_target_is_a_usage_error(
    flags: list[str],
    message: str,
    digits: np.ndarray,
    batch_cache: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    np.save(tmp_path / "x.npy", digits[:2])
    out = tmp_path / "out"
    argv = ["batch", "-m", "digits_cnn", str(tmp_path / "x.npy"), "-o", str(out), "--samples", "2"]
    code = main([*argv, "--cache-dir", str(batch_cache), "--workers", "1", *flags])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert not out.exists()  # stopped before the output folder was made
