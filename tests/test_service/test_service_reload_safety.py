"""A reload never replaces a working model with a failed load: while a served model's files are
rewritten in place and reloaded, its last good version keeps answering (GetModel names the failed
candidate, health stays SERVING), and ReloadModels requests are coalesced and rate-limited."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from estimator.method import Method
from service.client import ExplainerClient, MollifyError
from service.errors import ModelNotReadyError, OverloadedError
from service.reloads import ReloadGate
from service.repository import ModelRepository
from service.settings import Settings
from tests.support import wait_until

X = np.array([[0.3, -0.2, 0.7, 0.1]], np.float32)
METHOD = Method(samples=4)


def test_a_model_rewritten_in_place_keeps_serving_its_last_good_version(
    tmp_path: Path, helpers: SimpleNamespace
) -> None:
    root = tmp_path / "models"
    versions = [
        helpers.linear_model(seed=0).SerializeToString(),
        helpers.linear_model(seed=1).SerializeToString(),
    ]
    helpers.write_model(root, "flip", model=versions[0])
    helpers.write_model(
        root, "flip_b", model=versions[1]
    )  # the second version under its own name: its reference
    settings = Settings(
        address="127.0.0.1:0",
        model_repository=root,
        cache_dir=tmp_path / "cache",
        device="cpu",
        intra_op_threads=1,
        max_concurrent_requests=2,
        max_queued_requests=16,
        reload_min_interval_s=0.0,
    )
    server = helpers.start_server(settings)
    address = f"127.0.0.1:{server.port}"
    codes: Counter[str] = Counter()
    wrong: list[str] = []
    seen: Counter[int] = Counter()
    stop = threading.Event()
    clients: list[threading.Thread] = []
    try:
        with ExplainerClient(address, timeout=30) as client:
            references = [
                client.explain(name, X, method=METHOD, seed=7)[0].attribution for name in ("flip", "flip_b")
            ]
            assert not np.array_equal(references[0], references[1])

        def explain_in_a_loop() -> None:
            with ExplainerClient(address, timeout=30) as client:
                while not stop.is_set():
                    try:
                        [result] = client.explain("flip", X, method=METHOD, seed=7)
                    except MollifyError as err:
                        codes[err.code] += 1
                        continue
                    codes["OK"] += 1
                    matches = [
                        i for i, ref in enumerate(references) if np.array_equal(result.attribution, ref)
                    ]
                    if matches:
                        seen[matches[0]] += 1
                    else:
                        wrong.append(str(result.attribution))

        def let_the_clients_call(what: str) -> None:
            """Until at least one call that started after now has been answered."""
            before = sum(codes.values())
            wait_until(lambda: sum(codes.values()) > before + len(clients), 30, what)

        clients += [threading.Thread(target=explain_in_a_loop) for _ in range(3)]
        for thread in clients:
            thread.start()
        target = root / "flip" / "model.onnx"
        with ExplainerClient(address, timeout=30) as client:
            for step in range(4):
                data = versions[(step + 1) % 2]
                with open(target, "wb") as handle:  # a writer that does not write atomically
                    handle.write(data[: len(data) // 2])
                    handle.flush()
                    result = client.reload_models()
                    assert "flip" not in result.reloaded
                    info = client.get_model("flip")
                    assert info.ready and info.stale, info
                    assert "truncated" in info.candidate_error and "flip/model.onnx" in info.candidate_error
                    assert client.health("flip") == "SERVING"
                    client.reload_models()  # the same half-written files are not tried again
                    let_the_clients_call("calls while the model's files are half-written")
                    handle.write(data[len(data) // 2 :])
                assert client.reload_models().reloaded == ["flip"]
                info = client.get_model("flip")
                assert info.ready and not info.stale and info.candidate_error == ""
                assert client.health("flip") == "SERVING"
                [now] = client.explain("flip", X, method=METHOD, seed=7)
                np.testing.assert_array_equal(now.attribution, references[(step + 1) % 2])
                let_the_clients_call("calls to the reloaded model")
    finally:
        stop.set()
        for thread in clients:
            thread.join(30)
        server.stop(0).wait()
    assert codes["OK"] > 0 and set(codes) == {"OK"}, codes  # no FAILED_PRECONDITION, nothing else either
    assert wrong == []
    assert seen[0] > 0 and seen[1] > 0, seen


def test_a_candidate_is_dropped_once_the_served_files_are_back(
    tmp_path: Path, helpers: SimpleNamespace
) -> None:
    root = tmp_path / "models"
    helpers.write_model(root, "m")
    repository = ModelRepository(root, tmp_path / "cache", session_factory=helpers.slow_factory(0.0))
    repository.reload()
    served = repository.entry("m")
    good = (root / "m" / "config.json").read_text()
    (root / "m" / "config.json").write_text('{"name": "m"}')
    repository.reload()
    stale = repository.entry("m")
    assert (
        stale.session is served.session
        and stale.info.stale
        and "lacks the field" in stale.info.candidate_error
    )
    assert stale.info.version == served.info.version != ""
    assert repository.session_for(stale, "") is served.session
    with pytest.raises(ModelNotReadyError, match="serves its last good version while its changed files fail"):
        repository.session_for(stale, "hidden")  # the files it would be built from are not the served ones
    (root / "m" / "config.json").write_text(good)
    result = repository.reload()
    assert result.reloaded == [] and not repository.entry("m").info.stale
    assert repository.entry("m").session is served.session


def test_a_model_that_never_loaded_is_still_replaced_by_a_failed_load(
    tmp_path: Path, helpers: SimpleNamespace
) -> None:
    root = tmp_path / "models"
    helpers.write_model(root, "m", model=b"not a model")
    repository = ModelRepository(root, tmp_path / "cache", session_factory=helpers.slow_factory(0.0))
    repository.reload()
    (root / "m" / "config.json").write_text('{"name": "m"}')
    assert repository.reload().reloaded == ["m"]
    assert not repository.entry("m").info.ready and "lacks the field" in repository.entry("m").info.error


# ------------------------------------------------------------------------------------ rate limit


def test_concurrent_reload_requests_share_reloads_that_start_after_them() -> None:
    state = {"version": 0}
    scans: list[int] = []

    def reload() -> int:
        scans.append(state["version"])
        time.sleep(0.05)  # the scenario: a scan takes a while, and requests arrive during it
        return state["version"]

    gate = ReloadGate(reload, min_interval_s=0.2, max_waiters=100)
    assert gate.request() == 0
    answers: list[tuple[int, int]] = []
    lock = threading.Lock()

    def ask(version: int) -> None:
        result = gate.request()
        with lock:
            answers.append((version, result))

    threads = []
    started = time.monotonic()
    for version in range(1, 21):
        state["version"] = version  # a change to the files, then a reload request
        thread = threading.Thread(target=ask, args=(version,))
        thread.start()
        threads.append(thread)
        time.sleep(0.01)  # the scenario: requests spread over time, several within one reload
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    # Each request saw its own change (a reload that started after it), yet reloads were shared.
    assert all(result >= version for version, result in answers), answers
    assert len(scans) - 1 <= 2 + elapsed / 0.2, (scans, elapsed)
    assert gate.runs == len(scans)


def test_a_reload_error_reaches_every_caller_sharing_it() -> None:
    def reload() -> int:
        raise OSError("the repository vanished")

    gate = ReloadGate(reload)
    with pytest.raises(OSError, match="vanished"):
        gate.request()


def test_reload_requests_beyond_the_waiting_limit_are_refused_naming_the_setting(
    tmp_path: Path, helpers: SimpleNamespace
) -> None:
    root = tmp_path / "models"
    helpers.write_model(root, "m")
    settings = Settings(
        address="127.0.0.1:0",
        model_repository=root,
        cache_dir=tmp_path / "cache",
        reload_min_interval_s=0.5,
        max_concurrent_requests=1,
        max_queued_requests=16,
    )
    server = helpers.start_server(settings, session_factory=helpers.slow_factory(0.0))
    codes: Counter[str] = Counter()
    messages: list[str] = []
    lock = threading.Lock()
    runs_before = server.repository._gate.runs

    def spam() -> None:
        with ExplainerClient(f"127.0.0.1:{server.port}", timeout=30) as client:
            for _ in range(3):
                try:
                    client.reload_models()
                    code = "OK"
                except MollifyError as err:
                    code = err.code
                    with lock:
                        messages.append(err.message)
                with lock:
                    codes[code] += 1

    try:
        started = time.monotonic()
        threads = [threading.Thread(target=spam) for _ in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        runs = server.repository._gate.runs - runs_before
        with ExplainerClient(f"127.0.0.1:{server.port}", timeout=30) as client:
            assert client.health("m") == "SERVING"
    finally:
        server.stop(0).wait()
    assert (
        set(codes) <= {"OK", "RESOURCE_EXHAUSTED"} and codes["OK"] > 0 and codes["RESOURCE_EXHAUSTED"] > 0
    ), codes
    assert all("--reload-min-interval-s" in m and "MOLLIFY_RELOAD_MIN_INTERVAL_S" in m for m in messages)
    assert runs <= 2 + elapsed / 0.5, (runs, elapsed)  # 30 requests, a handful of reloads


def test_in_process_reloads_are_never_refused() -> None:
    release, reloading = threading.Event(), threading.Event()

    def reload() -> bool:
        reloading.set()
        return release.wait(5)

    gate = ReloadGate(reload, max_waiters=1)
    first = threading.Thread(target=gate.request)
    first.start()
    assert reloading.wait(5)
    with pytest.raises(OverloadedError, match="--reload-min-interval-s"):
        gate.request()
    waiting = threading.Thread(target=lambda: gate.request(may_refuse=False))
    waiting.start()
    release.set()
    first.join(5)
    waiting.join(5)
    assert not first.is_alive() and not waiting.is_alive() and gate.runs == 2


def test_the_reload_interval_setting_parses_and_is_validated() -> None:
    from service.errors import SettingsError

    assert Settings.from_sources({}, {"MOLLIFY_RELOAD_MIN_INTERVAL_S": "2.5"}).reload_min_interval_s == 2.5
    with pytest.raises(SettingsError, match="--reload-min-interval-s / MOLLIFY_RELOAD_MIN_INTERVAL_S"):
        Settings(reload_min_interval_s=-1)
