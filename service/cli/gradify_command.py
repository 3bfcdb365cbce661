"""``mollify gradify``: write the gradient model of an ONNX model and check that it runs.

    mollify gradify MODEL.onnx -o OUT.onnx [--input NAME]... [--output TENSOR]
                    [--shape NAME=1x8x8]... [--device auto|cpu|cuda] [--no-check]

Prints the inputs, explained tensor, cotangent, gradient outputs and weights of the result, then
the execution provider ONNX Runtime really uses and a one-sample smoke run. Failures print
``CODE: message`` to stderr (``UNSUPPORTED_OP``, ``INVALID_MODEL``, ``GRADIENT_GRAPH``,
``DEVICE_UNAVAILABLE``, ``MODEL_EVALUATION``, ``IO_ERROR``, ``USAGE``) and exit with 2.
Runs locally: no server is involved.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_FAILURE = 2

_SHAPE_PATTERN = re.compile(r"^\s*(?P<name>[^=]+?)\s*=\s*(?P<dims>\d+(?:\s*[x,]\s*\d+)*)\s*$")


class _Failure(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """``"input=1x8x8"`` or ``"input=1,8,8"`` → ``("input", (1, 8, 8))`` (one instance, no batch dimension)."""
    match = _SHAPE_PATTERN.match(text)
    if match is None:
        raise _Failure(
            "USAGE", f"--shape must look like NAME=1x8x8 or NAME=1,8,8 (one instance, no batch), got {text!r}"
        )
    dims = tuple(int(d) for d in re.split(r"\s*[x,]\s*", match.group("dims").strip()))
    if any(d < 1 for d in dims):
        raise _Failure("USAGE", f"--shape dimensions must be positive, got {text!r}")
    return match.group("name"), dims


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "gradify",
        help="write the gradient model of an ONNX model (local, no server)",
        description=(
            "Differentiate an ONNX model over its own graph: the result takes a cotangent for the "
            "explained tensor and returns J^T·cotangent for each chosen input, per sample of a batch."
        ),
        epilog="Errors print 'CODE: message' to stderr and exit with 2.",
    )
    parser.add_argument("model", type=Path, help="the ONNX model to differentiate")
    parser.add_argument("-o", "--out", type=Path, required=True, help="where to write the gradient model")
    parser.add_argument(
        "--input",
        dest="inputs",
        action="append",
        metavar="NAME",
        help="float graph input to differentiate (repeatable; default: every float graph input), or one float "
        "tensor inside the graph (an embedding output, a feature map): the result is then the gradient model of the "
        "graph after it, fed that tensor and the graph inputs that part still reads (e.g. an attention mask)",
    )
    parser.add_argument(
        "--output",
        dest="explained",
        metavar="TENSOR",
        help="tensor to explain, any tensor of the graph such as pre-Softmax logits (default: first output)",
    )
    parser.add_argument(
        "--shape",
        dest="shapes",
        action="append",
        metavar="NAME=DIMS",
        help="pin an input's instance shape without the batch, e.g. input=1x8x8 (repeatable)",
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="device for the check run (default: auto)",
    )
    parser.add_argument("--no-check", action="store_true", help="skip loading the result in ONNX Runtime")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        _run(args)
    except _Failure as failure:
        print(f"{failure.code}: {failure.message}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _run(args: argparse.Namespace) -> None:
    from estimator.errors import EstimatorError
    from models.gradient_graph import GradientGraphError, InvalidModelError, UnsupportedOpError, load_model
    from models.gradient_graph.external_data import data_files
    from models.gradify import check_gradient_model, gradify, summarize
    from models.runtime import DeviceUnavailableError

    shapes: dict[str, tuple[int, ...]] = {}
    for text in args.shapes or []:
        name, dims = parse_shape(text)
        if name in shapes:
            raise _Failure("USAGE", f"--shape names {name!r} twice")
        shapes[name] = dims
    try:
        gradify(args.model, args.out, args.inputs, args.explained, shapes or None)
        # External data stays in its files: a gradient model over 2 GB is never read into memory here.
        model = load_model(args.out, external_data=False)
        summary = summarize(model)
        data = data_files(model, args.out.parent)
        stored = sum(path.stat().st_size for path in [args.out, *data])
        beside = f", weights in {', '.join(path.name for path in data)}" if data else ""
        print(f"wrote {args.out} ({stored / 1024:.1f} KiB{beside})")
        for line in summary.lines():
            print(f"  {line}")
        if not args.no_check:
            check = check_gradient_model(args.out, device=args.device)
            for line in check.lines():
                print(f"  {line}")
            if not check.finite:
                raise _Failure("MODEL_EVALUATION", "the smoke run produced non-finite values")
    except DeviceUnavailableError as err:
        raise _Failure("DEVICE_UNAVAILABLE", str(err)) from err
    except UnsupportedOpError as err:
        raise _Failure("UNSUPPORTED_OP", str(err)) from err
    except InvalidModelError as err:
        raise _Failure("INVALID_MODEL", str(err)) from err
    except GradientGraphError as err:
        raise _Failure("GRADIENT_GRAPH", str(err)) from err
    except EstimatorError as err:
        raise _Failure("MODEL_EVALUATION", str(err)) from err
    except OSError as err:
        raise _Failure("IO_ERROR", f"{err.strerror or err}: {err.filename or args.model}") from err
