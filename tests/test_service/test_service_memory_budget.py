"""The default memory budget comes from the memory the process may use (cgroup limit, else physical
memory), is said at start, and a model whose single row does not fit is refused with the bytes it
needs and the setting to raise."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from estimator.explain import ESTIMATOR_BYTES_PER_FEATURE
from estimator.gradient_model import GradientBatch
from estimator.method import Method
from service import memory
from service import settings as settings_module
from service.client import ExplainerClient, MollifyError
from service.memory import cgroup_memory_limit, format_size
from service.settings import (
    MEMORY_BUDGET_CAP,
    MEMORY_BUDGET_FLOOR,
    Settings,
    add_arguments,
    default_memory_budget,
)

GIB = 1 << 30
X = np.full((1, 4), 0.25, np.float32)


class LayoutSizedModel:
    """A small linear model that reports the memory of one row of an 800×608 layout model (1 GiB)."""

    provider = "FakeExecutionProvider"
    input_shape = (4,)
    output_shape = (3,)
    bytes_per_sample = GIB
    weights: Mapping[str, np.ndarray] = {}

    def __call__(
        self, inputs: np.ndarray, cotangents: np.ndarray, weight_overrides: Any = None
    ) -> GradientBatch:
        w = np.arange(12, dtype=np.float32).reshape(3, 4)
        return GradientBatch(outputs=inputs @ w.T, gradients=cotangents @ w)


def _factory(model_bytes: bytes, model: Any, config: Any) -> LayoutSizedModel:
    return LayoutSizedModel()


# ------------------------------------------------------------------------------ memory detection


def _cgroup(tmp_path: Path, membership: str, files: dict[str, str]) -> tuple[Path, Path]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(membership)
    root = tmp_path / "sys-fs-cgroup"
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    return proc, root


def test_cgroup_v2_limit_of_a_parent_counts(tmp_path: Path) -> None:
    proc, root = _cgroup(
        tmp_path,
        "0::/kubepods/pod1/container\n",
        {
            "memory.max": "max\n",
            "kubepods/pod1/memory.max": f"{3 * GIB}\n",
            "kubepods/pod1/container/memory.max": "max\n",
        },
    )
    assert cgroup_memory_limit(proc, root) == 3 * GIB


def test_cgroup_v2_inside_a_namespace_and_unlimited(tmp_path: Path) -> None:
    proc, root = _cgroup(tmp_path, "0::/\n", {"memory.max": f"{2 * GIB}\n"})
    assert cgroup_memory_limit(proc, root) == 2 * GIB
    proc, root = _cgroup(tmp_path / "b", "0::/\n", {"memory.max": "max\n"})
    assert cgroup_memory_limit(proc, root) is None


def test_cgroup_v1_limit_and_its_no_limit_value(tmp_path: Path) -> None:
    proc, root = _cgroup(
        tmp_path,
        "4:memory:/docker/abc\n1:cpu,cpuacct:/docker/abc\n0::/\n",
        {
            "memory/memory.limit_in_bytes": "9223372036854771712\n",
            "memory/docker/abc/memory.limit_in_bytes": f"{GIB}\n",
        },
    )
    assert cgroup_memory_limit(proc, root) == GIB
    proc, root = _cgroup(
        tmp_path / "b", "4:memory:/\n", {"memory/memory.limit_in_bytes": "9223372036854771712\n"}
    )
    assert cgroup_memory_limit(proc, root) is None


def test_missing_cgroup_files_mean_no_limit(tmp_path: Path) -> None:
    assert cgroup_memory_limit(tmp_path / "absent", tmp_path) is None
    assert memory.available_memory_bytes() is None or memory.available_memory_bytes() > 0  # type: ignore[operator]


# ------------------------------------------------------------------------------- the default rule


def test_default_budget_is_a_quarter_of_the_memory_per_concurrent_explanation() -> None:
    assert default_memory_budget(2, available=16 * GIB) == 2 * GIB
    assert default_memory_budget(1, available=4 * GIB) == 1 * GIB
    assert default_memory_budget(4, available=256 << 20) == MEMORY_BUDGET_FLOOR
    assert default_memory_budget(1, available=1 << 40) == MEMORY_BUDGET_CAP


def test_settings_choose_the_budget_from_memory_and_keep_an_explicit_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings_module, "available_memory_bytes", lambda: 16 * GIB)
    assert Settings(max_concurrent_requests=2).memory_budget_bytes == 2 * GIB
    assert Settings(max_concurrent_requests=4).memory_budget_bytes == 1 * GIB
    assert "cgroup limit" in Settings().memory_budget_source
    explicit = Settings.from_sources({}, environ={"MOLLIFY_MEMORY_BUDGET_BYTES": "256MiB"})
    assert explicit.memory_budget_bytes == 256 << 20
    assert "MOLLIFY_MEMORY_BUDGET_BYTES" in explicit.memory_budget_source
    zero = Settings.from_sources({"max_concurrent_requests": 2}, environ={"MOLLIFY_MEMORY_BUDGET_BYTES": "0"})
    assert zero.memory_budget_bytes == 2 * GIB  # 0 asks for the rule too


def test_the_help_states_the_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    monkeypatch.setattr(settings_module, "available_memory_bytes", lambda: 16 * GIB)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    text = " ".join(parser.format_help().split())
    assert "a quarter of the memory this process may use (its cgroup limit, else the physical memory)" in text
    assert "divided by --max-concurrent-requests" in text and "between 64 MiB and 4 GiB" in text


# --------------------------------------------------------------------------------- on the server


def test_a_layout_sized_model_runs_at_the_default_budget_and_start_says_it(
    tmp_path: Path,
    helpers: SimpleNamespace,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(settings_module, "available_memory_bytes", lambda: 16 * GIB)
    root = tmp_path / "models"
    helpers.write_model(root, "layout")
    settings = Settings(
        address="127.0.0.1:0", model_repository=root, cache_dir=tmp_path / "cache", max_concurrent_requests=2
    )
    with caplog.at_level(logging.INFO, logger="mollify"):
        server = helpers.start_server(settings, session_factory=_factory)
    try:
        [serving] = [r for r in caplog.records if r.getMessage() == "serving"]
        assert serving.memory_budget_bytes == 2 * GIB  # type: ignore[attr-defined]
        assert serving.memory_budget.startswith("2.0 GiB per explanation (a quarter of the memory")  # type: ignore[attr-defined]
        with ExplainerClient(f"127.0.0.1:{server.port}", timeout=30) as client:
            [result] = client.explain("layout", X, method=Method(samples=8), seed=0)
        assert result.samples == 8
    finally:
        server.stop(0).wait(10)


def test_a_row_beyond_the_budget_names_the_bytes_and_the_setting(
    tmp_path: Path, helpers: SimpleNamespace
) -> None:
    root = tmp_path / "models"
    helpers.write_model(root, "layout")
    settings = Settings(
        address="127.0.0.1:0",
        model_repository=root,
        cache_dir=tmp_path / "cache",
        memory_budget_bytes=256 << 20,
    )
    server = helpers.start_server(settings, session_factory=_factory)
    try:
        with (
            ExplainerClient(f"127.0.0.1:{server.port}", timeout=30) as client,
            pytest.raises(MollifyError) as caught,
        ):
            client.explain("layout", X, method=Method(samples=8), seed=0)
    finally:
        server.stop(0).wait(10)
    needed = GIB + ESTIMATOR_BYTES_PER_FEATURE * 4
    message = caught.value.message
    assert caught.value.code == "RESOURCE_EXHAUSTED"
    assert f"needs about {format_size(needed)} ({needed} bytes)" in message
    assert "memory budget per explanation is 256.0 MiB" in message
    assert "--memory-budget-bytes / MOLLIFY_MEMORY_BUDGET_BYTES of at least 1025MiB" in message
    assert "max-evaluations" not in message
