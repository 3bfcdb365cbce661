"""``mollify demo``: the first run. Serve the bundled models, explain a digit and a tabular row.

Starts the server in this process on a free loopback port with the bundled demo models (unless
``--server`` names a running one), explains ``digit_3.png`` with the digits CNN and the first row of
``breast_cancer_rows.csv`` with the breast-cancer MLP, each with SmoothGrad and AdaptGrad, writes
the figures, prints where they are and stops the server.

Files under ``--out`` (default ``mollify-demo``):

- ``digit_3.smoothgrad.heatmap.png``, ``digit_3.adaptgrad.heatmap.png`` (+ ``.npy``, ``.json``)
- ``digit_3.compare.png``: Grad / SmoothGrad / AdaptGrad (the full 3 × 3 grid without ``--quick``)
- ``breast_cancer_rows_row1.smoothgrad.bars.png``, ``breast_cancer_rows_row1.adaptgrad.bars.png``
- ``breast_cancer_rows_row1.compare.png``: features × methods
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from service.cli import inputs as input_files
from service.cli import render
from service.cli.compare_command import compare_methods, write_comparison
from service.cli.connection import server_errors
from service.cli.explain_command import explain_inputs, report
from service.cli.method_flags import (
    DEFAULT_COMPARE_METHODS,
    checked_seed,
    method_from_args,
    parse_method_list,
)
from service.cli.output import EXIT_CODES_HELP, EXIT_OK, dumps, guarded, server_error
from service.client import ExplainerClient, ModelInfo

DEFAULT_OUT = "mollify-demo"
DIGIT_MODEL = "digits_cnn"
DIGIT_SAMPLE = "digit_3.png"
TABULAR_MODEL = "breast_cancer_mlp"
TABULAR_SAMPLE = "breast_cancer_rows.csv"
_READY_TIMEOUT_S = 120.0


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="start a server on the bundled models, explain a digit and a tabular row, write figures",
        description="The first run: serve the bundled demo models in this process, explain a handwritten "
        "digit and a breast-cancer record with SmoothGrad and AdaptGrad, write heatmaps, bar charts and "
        "comparison figures, print where they are, and stop the server.",
        epilog=EXIT_CODES_HELP,
    )
    parser.add_argument(
        "--out",
        "-o",
        type=Path,
        default=Path(DEFAULT_OUT),
        metavar="DIR",
        help=f"folder for the figures (default: {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer samples and a smaller comparison (a few seconds; for smoke tests)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed of every explanation (default: 0)")
    parser.add_argument(
        "--server",
        metavar="HOST:PORT",
        help="use the server running there instead of starting one (it must serve the demo models)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print a machine-readable JSON document on stdout"
    )
    parser.set_defaults(func=run)


@contextlib.contextmanager
def local_server() -> Iterator[str]:
    """Serve the bundled demo models in this process on a free loopback port; yield its address."""
    from service.server import create_server
    from service.settings import Settings

    settings = Settings.from_sources({"address": "127.0.0.1:0", "log_level": "WARNING", "metrics_port": 0})
    server, port = create_server(settings)
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=1.0).wait(10.0)


def wait_until_ready(
    client: ExplainerClient, names: tuple[str, ...], timeout_s: float = _READY_TIMEOUT_S
) -> dict[str, ModelInfo]:
    """Poll until every model in ``names`` is ready; a load error or the timeout is an error (exit 3)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with server_errors(client.address):
            infos = {name: client.get_model(name) for name in names}
        failed = [info for info in infos.values() if not info.ready and info.error]
        if failed:
            raise server_error(
                "FAILED_PRECONDITION", f"demo model {failed[0].name!r} failed to load: {failed[0].error}"
            )
        if all(info.ready for info in infos.values()):
            return infos
        if time.monotonic() >= deadline:
            raise server_error("DEADLINE_EXCEEDED", f"demo models not ready after {timeout_s:.0f} s")
        time.sleep(0.2)


def _method_options(quick: bool) -> argparse.Namespace:
    # Quick: enough samples for a recognisable map in about a second; full: the papers' N = 50+.
    return argparse.Namespace(samples=16 if quick else 100, ig_steps=16 if quick else 50)


def _explain_sample(
    client: ExplainerClient,
    info: ModelInfo,
    sample: Path,
    out_dir: Path,
    *,
    quick: bool,
    seed: int,
    as_json: bool,
) -> dict[str, Any]:
    spec = input_files.InputSpec.from_model_info(info)
    item = input_files.load_inputs([sample], spec)[0]
    style = render.HeatmapStyle()
    options = _method_options(quick)
    summaries = []
    for preset in ("smoothgrad", "adaptgrad"):
        method = method_from_args(argparse.Namespace(**vars(options), method=preset))
        results = explain_inputs(
            client, info.name, item.tensor[None], method=method, seed=seed, label=f"{info.name} {preset}"
        )
        named = dataclasses.replace(item, name=f"{item.name}.{preset}")
        summaries.extend(
            report(results, [named], info, spec, out_dir, style=style, figures=True, top=8, as_json=as_json)
        )
    specs = parse_method_list("grad,smoothgrad,adaptgrad" if quick else ",".join(DEFAULT_COMPARE_METHODS))
    results = compare_methods(client, info, item, specs, options, target="predicted", seed=seed)
    comparison = write_comparison(
        out_dir, item, info, spec, specs, results, style=style, columns=3, figures=True
    )
    return {"model": info.name, "input": str(sample), "explanations": summaries, "comparison": comparison}


@guarded
def run(args: argparse.Namespace) -> int:
    from models.demo import sample_path

    checked_seed(args.seed)
    started = time.monotonic()
    server = contextlib.nullcontext(args.server) if args.server else local_server()
    with server as address, ExplainerClient(address) as client:
        if not args.json:
            print(
                f"mollify demo: {'using' if args.server else 'started'} a server at {address}",
                file=sys.stderr,
            )
        infos = wait_until_ready(client, (DIGIT_MODEL, TABULAR_MODEL))
        documents = [
            _explain_sample(
                client,
                infos[model],
                sample_path(sample),
                args.out,
                quick=args.quick,
                seed=args.seed,
                as_json=args.json,
            )
            for model, sample in ((DIGIT_MODEL, DIGIT_SAMPLE), (TABULAR_MODEL, TABULAR_SAMPLE))
        ]
    figures = [
        path
        for document in documents
        for entry in [*document["explanations"], document["comparison"]]
        for key, path in entry["files"].items()
        if key in ("heatmap", "bar_chart", "figure")
    ]
    if args.json:
        print(dumps({"out": str(args.out), "figures": figures, "results": documents}))
        return EXIT_OK
    noise = {summary["method"]: summary["inherent_noise"] for summary in documents[0]["explanations"]}
    print()
    print("Inherent noise (share of noisy samples outside the input domain, AdaptGrad paper Eq. 9-10):")
    for method, value in noise.items():
        print(f"  {value:.4f}  {method}")
    print(f"\nFigures ({time.monotonic() - started:.1f} s):")
    for path in figures:
        print(f"  {path}")
    return EXIT_OK
