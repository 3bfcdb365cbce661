"""What Python gRPC alone costs around a small model: the floor under the service's end-to-end time.

    PYTHONPATH=. python benchmarks/grpc_floor.py [--repeats 15] [--burst 20]

A bare ``ExplainerService`` (``--serve``, run here as a subprocess) whose ``Explain`` does nothing but
the two gradient-graph runs of a SmoothGrad N = 50 explanation of the bundled digits CNN (the clean
row, then 50 rows) and returns a response of the real size: no validation, no noise, no moments,
no scheduling, no metrics. Timed side by side with the same two runs called in this process
("raw"), as the fastest mean of ``--burst`` back-to-back calls over ``--repeats`` rounds, like
``benchmarks/service.py`` times the small model. ``bare − raw`` is what the transport (grpcio
client and server, protobuf, the process boundary) costs before the service does any work.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import grpc  # noqa: E402
import numpy as np  # noqa: E402

from estimator.method import Method, PredictedClassTarget  # noqa: E402
from models.config import ModelConfig  # noqa: E402
from models.gradient_graph import build_gradient_model  # noqa: E402
from models.runtime import GradientSession  # noqa: E402
from protos.mollify.v1 import explainer_pb2 as pb  # noqa: E402
from protos.mollify.v1 import explainer_pb2_grpc as pb_grpc  # noqa: E402
from service import codec  # noqa: E402
from service.vocabulary import ExplainTarget  # noqa: E402

_DEMO = Path(__file__).resolve().parents[1] / "models" / "demo" / "digits_cnn"
SAMPLES = 50


def _session() -> GradientSession:
    import onnx

    config = ModelConfig.load(_DEMO)
    model = onnx.load(str(_DEMO / "model.onnx"))
    graph = build_gradient_model(
        model,
        [config.input_name],
        config.explained_tensor,
        input_shapes={config.input_name: config.input_shape},
    )
    graph.ir_version = min(graph.ir_version, 10)
    return GradientSession(graph, input_name=config.input_name, device="cpu", intra_op_threads=2)


def _raw_calls(session: GradientSession) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The estimator's model calls for one SmoothGrad explanation: clean row, then the noisy rows."""
    outputs = session.output_shape
    clean_cotangent = np.zeros((1, *outputs), np.float32)
    cotangents = np.zeros((SAMPLES, *outputs), np.float32)
    cotangents[:, 0] = 1.0

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        session(x, clean_cotangent)
        result = session(np.repeat(x, SAMPLES, axis=0), cotangents)
        return result.outputs[0], result.gradients[0]

    return run


class _BareServicer(pb_grpc.ExplainerServiceServicer):
    def __init__(
        self, run: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], shape: tuple[int, ...]
    ) -> None:
        self._run = run
        self._shape = shape

    def Explain(self, request: pb.ExplainRequest, context: grpc.ServicerContext) -> pb.ExplainResponse:
        x = np.frombuffer(request.inputs.raw_contents, np.float32).reshape((1, *self._shape))
        outputs, gradient = self._run(x)
        tensor = codec.array_to_tensor(gradient)
        return pb.ExplainResponse(
            explanations=[
                pb.InstanceExplanation(
                    attribution=tensor, standard_error=tensor, outputs=codec.array_to_tensor(outputs)
                )
            ]
        )


def serve() -> None:
    session = _session()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_ExplainerServiceServicer_to_server(
        _BareServicer(_raw_calls(session), session.input_shape), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"listening on 127.0.0.1:{port}", flush=True)
    server.wait_for_termination()


def _burst(function: Callable[[], object], calls: int) -> float:
    time.sleep(0.1)
    start = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - start) / calls


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--burst", type=int, default=20)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve()
        return 0
    process = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True)
    try:
        banner = (process.stdout.readline() if process.stdout else "").split()
        if len(banner) < 3:
            raise RuntimeError("the bare server did not start")
        session = _session()
        run = _raw_calls(session)
        x = np.random.default_rng(0).random((1, *session.input_shape)).astype(np.float32)
        request = pb.ExplainRequest(
            model_name="digits_cnn",
            inputs=codec.array_to_tensor(x),
            target=codec.target_to_proto(ExplainTarget(selection=PredictedClassTarget())),
            method=codec.method_to_proto(Method(samples=SAMPLES)),
            seed=1,
        )
        with grpc.insecure_channel(banner[2]) as channel:
            stub = pb_grpc.ExplainerServiceStub(channel)
            contenders: dict[str, Callable[[], object]] = {
                "raw": lambda: run(x),
                "bare": lambda: stub.Explain(request, timeout=60),
            }
            times: dict[str, list[float]] = {name: [] for name in contenders}
            for function in contenders.values():
                _burst(function, args.burst)
            for _ in range(args.repeats):
                for name, function in contenders.items():
                    times[name].append(_burst(function, args.burst))
    finally:
        process.terminate()
        process.wait(timeout=30)
    raw, bare = min(times["raw"]), min(times["bare"])
    print(
        f"digits CNN, SmoothGrad N = {SAMPLES} (clean row + {SAMPLES} rows), fastest mean of {args.burst} "
        f"back-to-back calls over {args.repeats} rounds"
    )
    print(f"{'raw graph runs in-process':34} {raw * 1000:8.3f} ms")
    print(f"{'bare gRPC servicer, same runs':34} {bare * 1000:8.3f} ms")
    print(f"{'bare - raw (transport floor)':34} {(bare - raw) * 1000:8.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
