"""A bounded chaos and soak run against a real `mollify serve` process on loopback.

Several clients send a mix of valid and malformed requests, cancel streams, let deadlines expire and
ask for model lists and health, while a reloader rewrites a served model, ``flip``, in place (a
partial write and a reload, then the rest; a different valid model, then the original back),
corrupts its cached gradient graph and reloads. At the end the server gets SIGTERM. The run fails
(exit 1) on any INTERNAL or UNKNOWN status, any FAILED_PRECONDITION for ``flip`` or ``flip`` not
ready while half written (the last good version must keep serving), any OK answer that differs bit
for bit from the reference computed before the chaos (for ``flip``: of either version), a server
crash, a computing slot still held afterwards, or RSS / thread growth beyond the margins.

    PYTHONPATH=. python benchmarks/chaos.py --duration 60 --clients 6

It stops by itself: the chaos lasts ``--duration`` seconds (at most 100), the whole run at most
about 2 minutes. The test suite runs a short version (tests/test_service/test_chaos.py).
"""

from __future__ import annotations

import argparse
import collections
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from estimator.method import Method  # noqa: E402
from models.demo import repository_path  # noqa: E402
from protos.mollify.v1 import explainer_pb2 as pb  # noqa: E402
from service.client import ExplainerClient, MollifyError  # noqa: E402
from service.codec import array_to_tensor, method_to_proto  # noqa: E402

# Status codes a hostile but legitimate workload may see; anything else fails the run.
EXPECTED_CODES = {
    "OK",
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "FAILED_PRECONDITION",
    "RESOURCE_EXHAUSTED",
    "DEADLINE_EXCEEDED",
    "CANCELLED",
    "UNAVAILABLE",
}
MAX_CONCURRENT = 2
RSS_GROWTH_LIMIT = 1.5  # end / warm RSS
THREAD_GROWTH_LIMIT = 8  # extra threads allowed at the end


@dataclass
class Tally:
    """What every client saw, shared between threads."""

    codes: collections.Counter[str] = field(default_factory=collections.Counter)
    violations: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, operation: str, code: str, detail: str = "") -> None:
        with self.lock:
            self.codes[f"{operation}:{code}"] += 1
            if code not in EXPECTED_CODES:
                self.violations.append(f"{operation} answered {code}: {detail[:300]}")

    def violate(self, text: str) -> None:
        with self.lock:
            self.violations.append(text)


def _status(pid: int) -> tuple[int, int]:
    """(RSS bytes, thread count) of a process, from /proc."""
    rss = threads = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss, threads


def _pump(stream: Any) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def run() -> None:
        for line in stream:
            lines.put(line)

    threading.Thread(target=run, daemon=True).start()
    return lines


def _start_server(
    repository: Path, cache: Path, workdir: Path
) -> tuple[subprocess.Popen[str], int, queue.Queue[str]]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "MOLLIFY_LOG_FORMAT": "text",
        "MOLLIFY_DRAIN_DELAY_S": "0.5",
        "MOLLIFY_GRACE_PERIOD_S": "5",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service",
            "--address",
            "127.0.0.1:0",
            "--model-repository",
            str(repository),
            "--cache-dir",
            str(cache),
            "--device",
            "cpu",
            "--intra-op-threads",
            "1",
            "--max-concurrent-requests",
            str(MAX_CONCURRENT),
            "--max-queued-requests",
            "8",
            "--memory-budget-bytes",
            "8MiB",
            "--max-evaluations",
            "200000",
            "--metrics-port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=workdir,
    )
    stdout = _pump(process.stdout)
    _pump(process.stderr)  # drained so the server never blocks on a full pipe
    banner = stdout.get(timeout=90)
    if not banner.startswith("listening on 127.0.0.1:"):
        raise RuntimeError(f"unexpected first line from the server: {banner!r}")
    return process, int(banner.split()[2].rsplit(":", 1)[1]), stdout


# ------------------------------------------------------------------------------------- workload

DIGIT = np.linspace(0.0, 1.0, 64, dtype=np.float32).reshape(1, 8, 8)  # one instance
ROWS = np.random.default_rng(0).uniform(0.0, 1.0, (2, 30)).astype(np.float32)


@dataclass(frozen=True, eq=False)
class ValidCall:
    """A valid request whose answer must equal a reference bit for bit."""

    model: str
    inputs: np.ndarray
    method: Method
    seed: int


VALID = (
    ValidCall("digits_cnn", DIGIT[None], Method(samples=16), 1),
    ValidCall("digits_cnn", DIGIT[None], Method(scale="adaptive", samples=12), 2),
    ValidCall("digits_cnn", DIGIT[None], Method(base="integrated_gradients", ig_steps=8, samples=2), 3),
    ValidCall("breast_cancer_mlp", ROWS, Method(samples=20, kernel="poisson"), 4),
    ValidCall("flip", DIGIT[None], Method(samples=8), 5),
)


def _explain(client: ExplainerClient, call: ValidCall, timeout: float = 30) -> list[np.ndarray]:
    results = client.explain(call.model, call.inputs, method=call.method, seed=call.seed, timeout=timeout)
    return [r.attribution for r in results]


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(
        x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, b, strict=True)
    )


def _malformed(client: ExplainerClient, rng: random.Random) -> tuple[str, Callable[[], Any]]:
    stub = client._stub  # raw requests the typed client would refuse before sending
    choices: list[tuple[str, Callable[[], Any]]] = [
        ("unknown-model", lambda: client.explain("no_such_model", DIGIT[None])),
        ("huge-name", lambda: client.explain("m" * 200_000, DIGIT[None])),
        ("bad-shape", lambda: client.explain("digits_cnn", np.zeros((1, 3, 5), np.float32))),
        ("nan", lambda: client.explain("digits_cnn", np.full((1, 1, 8, 8), np.nan, np.float32))),
        (
            "zero-samples",
            lambda: stub.Explain(
                pb.ExplainRequest(
                    model_name="digits_cnn", inputs=array_to_tensor(DIGIT[None]), method=pb.Method(samples=0)
                ),
                timeout=10,
            ),
        ),
        (
            "bad-kernel",
            lambda: stub.Explain(
                pb.ExplainRequest(
                    model_name="digits_cnn",
                    inputs=array_to_tensor(DIGIT[None]),
                    method=pb.Method(kernel="laplace" * 1000),
                ),
                timeout=10,
            ),
        ),
        (
            "too-many-dims",
            lambda: stub.Explain(
                pb.ExplainRequest(
                    model_name="digits_cnn", inputs=pb.Tensor(datatype=pb.DATA_TYPE_FP32, shape=[1] * 70)
                ),
                timeout=10,
            ),
        ),
        (
            "zero-and-huge-dim",
            lambda: stub.Explain(
                pb.ExplainRequest(
                    model_name="digits_cnn", inputs=pb.Tensor(datatype=pb.DATA_TYPE_FP32, shape=[0, 2**62])
                ),
                timeout=10,
            ),
        ),
        (
            "fp32-overflow-sigma",
            lambda: stub.Explain(
                pb.ExplainRequest(
                    model_name="digits_cnn",
                    inputs=array_to_tensor(DIGIT[None]),
                    method=method_to_proto(Method(samples=2, sigma=3e38)),
                ),
                timeout=10,
            ),
        ),
        ("over-limit", lambda: client.explain("digits_cnn", DIGIT[None], method=Method(samples=10**7))),
        (
            "gl-cap",
            lambda: client.explain(
                "digits_cnn", DIGIT[None], method=Method(base="integrated_gradients", ig_steps=8000)
            ),
        ),
        (
            "garbage-bytes",
            lambda: client._channel.unary_unary("/mollify.v1.ExplainerService/Explain")(
                b"\xff\xfe not a protobuf", timeout=10
            ),
        ),
    ]
    return rng.choice(choices)


def _client_loop(
    address: str,
    stop: threading.Event,
    tally: Tally,
    references: dict[ValidCall, list[np.ndarray]],
    flip_versions: list[list[np.ndarray]],
    seed: int,
) -> None:
    rng = random.Random(seed)
    with ExplainerClient(address, timeout=30) as client:
        while not stop.is_set():
            roll = rng.random()
            operation = "explain"
            try:
                if roll < 0.45:
                    call = rng.choice(VALID)
                    operation = f"explain {call.model}"
                    got = _explain(client, call)
                    expected = flip_versions if call.model == "flip" else [references[call]]
                    matches = [i for i, e in enumerate(expected) if _same(got, e)]
                    if not matches:
                        tally.violate(f"wrong result for {call.model} {call.method} seed {call.seed}")
                    elif call.model == "flip":
                        tally.record(f"flip answered as version {matches[0]}", "OK")
                    tally.record(operation, "OK")
                elif roll < 0.70:
                    name, send = _malformed(client, rng)
                    operation = name
                    send()
                    tally.record(name, "OK")
                    tally.violate(f"malformed request {name} was answered OK")
                elif roll < 0.80:
                    operation = "cancel"
                    stream = client.explain_stream(
                        "digits_cnn", DIGIT[None], method=Method(samples=3000), seed=9
                    )
                    next(stream)
                    stream.close()  # cancels the call on the server
                    tally.record("cancel", "OK")
                elif roll < 0.90:
                    operation = "deadline"
                    client.explain(
                        "digits_cnn", DIGIT[None], method=Method(samples=20000), seed=1, timeout=0.05
                    )
                    tally.record("deadline", "OK")
                else:
                    operation = "metadata"
                    client.list_models()
                    client.health()
                    client.health("digits_cnn")
                    tally.record("metadata", "OK")
            except MollifyError as err:
                tally.record(operation, err.code, err.message)
                if operation == "explain flip" and err.code == "FAILED_PRECONDITION":
                    tally.violate(
                        f"flip, rewritten in place, answered FAILED_PRECONDITION: {err.message[:300]}"
                    )
            except Exception as err:  # noqa: BLE001 - anything else is a finding, not a crash of the run
                code = getattr(err, "code", lambda: None)()
                name = getattr(code, "name", type(err).__name__)
                tally.record(operation, str(name), str(err))


def _reloader(
    address: str, stop: threading.Event, tally: Tally, repository: Path, cache: Path, versions: list[bytes]
) -> dict[str, int]:
    counts = collections.Counter[str]()
    target = repository / "flip" / "model.onnx"
    with ExplainerClient(address, timeout=60) as client:
        step = 0
        while not stop.wait(1.0):
            data = versions[step % len(versions)]
            # A writer that does not write atomically: half the file, a reload, then the rest.
            with open(target, "wb") as handle:
                handle.write(data[: len(data) // 2])
                handle.flush()
                try:
                    client.reload_models()
                    counts["reload-partial"] += 1
                    info = client.get_model("flip")
                    if not info.ready:
                        tally.violate(
                            f"flip was taken down by a reload of its half-written file: {info.error[:300]}"
                        )
                    counts["stale-seen"] += int(info.stale and bool(info.candidate_error))
                except MollifyError as err:
                    tally.record("reload", err.code, err.message)
                handle.write(data[len(data) // 2 :])
            if step % 3 == 1:
                for entry in cache.rglob("*"):
                    if entry.is_file() and entry.suffix == ".onnx":
                        entry.write_bytes(b"corrupted by the chaos run")
                        counts["cache-corrupted"] += 1
                        break
            try:
                client.reload_models()
                counts["reload"] += 1
            except MollifyError as err:
                tally.record("reload", err.code, err.message)
            step += 1
    target.write_bytes(versions[-1])  # the reference version back for the checks after the chaos
    return dict(counts)


def _variant(model_bytes: bytes) -> bytes:
    """The same network with its largest weight tensor halved: another valid version of the model."""
    model = onnx.ModelProto()
    model.ParseFromString(model_bytes)
    floats = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    tensor = max(floats, key=lambda t: int(np.prod(t.dims)))
    values = onnx.numpy_helper.to_array(tensor)
    tensor.CopyFrom(onnx.numpy_helper.from_array((values * 0.5).astype(values.dtype), tensor.name))
    return model.SerializeToString()


def run(duration: float, clients: int, seed: int) -> int:
    duration = min(duration, 100.0)
    work = Path(tempfile.mkdtemp(prefix="mollify-chaos-"))
    repository, cache = work / "models", work / "cache"
    for name in ("digits_cnn", "breast_cancer_mlp"):
        shutil.copytree(repository_path() / name, repository / name)
    shutil.copytree(repository_path() / "digits_cnn", repository / "flip")
    original = (repository / "flip" / "model.onnx").read_bytes()
    # The second version of flip, served apart under its own name for its reference answers.
    shutil.copytree(repository_path() / "digits_cnn", repository / "flip_b")
    (repository / "flip_b" / "model.onnx").write_bytes(_variant(original))
    tally = Tally()
    started = time.monotonic()
    process, port, _stdout = _start_server(repository, cache, work)
    address = f"127.0.0.1:{port}"
    try:
        with ExplainerClient(address, timeout=60) as client:
            references = {call: _explain(client, call) for call in VALID}
            flip = VALID[-1]
            flip_versions = [
                references[flip],
                _explain(client, ValidCall("flip_b", flip.inputs, flip.method, flip.seed)),
            ]
            if _same(flip_versions[0], flip_versions[1]):
                raise RuntimeError(
                    "the two versions of flip explain alike; the chaos could not tell them apart"
                )
        for call in VALID[:3]:  # warm every path before the first reading
            with ExplainerClient(address, timeout=60) as client:
                _explain(client, call)
        # A short concurrent warm-up grows the server's worker pools to what this many clients use,
        # so that the before/after comparison sees leaks, not pools filling up.
        warm_stop, warm_tally = threading.Event(), Tally()
        warmers = [
            threading.Thread(
                target=_client_loop,
                args=(address, warm_stop, warm_tally, references, flip_versions, seed + 100 + i),
            )
            for i in range(clients)
        ]
        for thread in warmers:
            thread.start()
        time.sleep(min(5.0, duration / 4))
        warm_stop.set()
        for thread in warmers:
            thread.join(timeout=60)
        tally.violations.extend(warm_tally.violations)
        time.sleep(1.0)
        warm_rss, warm_threads = _status(process.pid)

        stop = threading.Event()
        threads = [
            threading.Thread(
                target=_client_loop, args=(address, stop, tally, references, flip_versions, seed + i)
            )
            for i in range(clients)
        ]
        reload_counts: dict[str, int] = {}
        reloader = threading.Thread(
            target=lambda: reload_counts.update(
                _reloader(address, stop, tally, repository, cache, [_variant(original), original])
            )
        )
        for thread in [*threads, reloader]:
            thread.start()
        time.sleep(duration)
        stop.set()
        for thread in [*threads, reloader]:
            thread.join(timeout=60)
            if thread.is_alive():
                tally.violate("a client thread hung past the end of the chaos")
        if process.poll() is not None:
            tally.violate(f"the server exited during the chaos with code {process.returncode}")

        # Quiet again: the model must be back, every slot free, memory and threads back near the warm state.
        with ExplainerClient(address, timeout=60) as client:
            client.reload_models()
            for call in VALID:
                if not _same(_explain(client, call), references[call]):
                    tally.violate(f"after the chaos, {call.model} answers differently from its reference")
            burst_errors: list[str] = []

            def one() -> None:
                try:
                    _explain(client, VALID[0])
                except MollifyError as err:
                    burst_errors.append(err.code)

            burst = [threading.Thread(target=one) for _ in range(MAX_CONCURRENT)]
            for thread in burst:
                thread.start()
            for thread in burst:
                thread.join()
            if burst_errors:
                tally.violate(
                    f"a burst of {MAX_CONCURRENT} requests after the chaos got {burst_errors}: a slot leaked"
                )
        time.sleep(1.0)
        end_rss, end_threads = _status(process.pid)
        if end_rss > RSS_GROWTH_LIMIT * warm_rss:
            tally.violate(f"RSS grew from {warm_rss / 2**20:.0f} MiB to {end_rss / 2**20:.0f} MiB")
        if end_threads > warm_threads + THREAD_GROWTH_LIMIT:
            tally.violate(f"threads grew from {warm_threads} to {end_threads}")

        # SIGTERM with a request in flight: it finishes or is cut off with UNAVAILABLE; the server exits 0.
        in_flight: list[str] = []

        def last_call() -> None:
            try:
                with ExplainerClient(address, timeout=30) as client:
                    _explain(client, VALID[0])
                in_flight.append("OK")
            except MollifyError as err:
                in_flight.append(err.code)

        final = threading.Thread(target=last_call)
        final.start()
        time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        final.join(timeout=30)
        code = process.wait(timeout=30)
        if code != 0:
            tally.violate(f"the server exited with {code} after SIGTERM")
        for answer in in_flight:
            if answer not in ("OK", "UNAVAILABLE"):
                tally.violate(f"the request in flight at SIGTERM got {answer}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        shutil.rmtree(work, ignore_errors=True)

    total = sum(tally.codes.values())
    print(
        f"chaos run: {duration:.0f} s, {clients} clients, {total} calls, whole run {time.monotonic() - started:.0f} s"
    )
    print(f"{'operation:status':<36} {'count':>7}")
    for key, count in sorted(tally.codes.items()):
        print(f"{key:<36} {count:>7}")
    print(f"reloader: {reload_counts}")
    print(
        f"server RSS {warm_rss / 2**20:.0f} → {end_rss / 2**20:.0f} MiB, threads {warm_threads} → {end_threads}"
    )
    if tally.violations:
        print(f"FAILED: {len(tally.violations)} violations")
        for line in tally.violations[:30]:
            print("  " + line)
        return 1
    print("passed: no INTERNAL, no wrong result, no crash, no leak")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of chaos (at most 100)")
    parser.add_argument("--clients", type=int, default=6, help="concurrent client threads")
    parser.add_argument("--seed", type=int, default=0, help="seed of the clients' choices")
    args = parser.parse_args()
    return run(args.duration, args.clients, args.seed)


if __name__ == "__main__":
    sys.exit(main())
