"""``mollify models``: the server's models, their shapes, readiness, batching and execution provider."""

from __future__ import annotations

import argparse
from typing import Any

from service.cli.connection import add_connection_arguments, open_client, server_errors
from service.cli.output import EXIT_CODES_HELP, EXIT_OK, dumps, format_table, guarded
from service.client import ModelInfo


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list the server's models",
        description="List every model of the server's repository: input and explained tensor shapes, "
        "readiness (or the load error), how rows are batched through it and the execution provider. A model "
        "whose changed files failed to load is 'stale': its last good version keeps serving.",
        epilog=EXIT_CODES_HELP,
    )
    parser.add_argument("name", nargs="?", help="describe only this model")
    parser.add_argument("--json", action="store_true", help="print a machine-readable JSON document")
    add_connection_arguments(parser)
    parser.set_defaults(func=run)


def _shape(shape: tuple[int, ...]) -> str:
    if not shape:
        return "?"
    dims = ["?" if d < 0 else str(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def _batching(info: ModelInfo) -> str:
    if info.batching == "fixed":
        rows = info.fixed_batch_size
        return f"fixed ({rows} row{'' if rows == 1 else 's'})"
    return info.batching or "-"


def model_record(info: ModelInfo) -> dict[str, Any]:
    """The JSON form of one model (bounds summarised by their range, not listed)."""
    return {
        "name": info.name,
        "ready": info.ready,
        "error": info.error,
        "stale": info.stale,
        "candidate_error": info.candidate_error,
        "version": info.version,
        "batching": info.batching,
        "fixed_batch_size": info.fixed_batch_size,
        "input": {"name": info.input_name, "shape": list(info.input_shape)},
        "output": {"name": info.output_name, "shape": list(info.output_shape)},
        "lower": float(info.lower.min()) if info.lower.size else None,
        "upper": float(info.upper.max()) if info.upper.size else None,
        "labels": info.labels,
        "feature_names": info.feature_names,
        "preprocessing": info.preprocessing,
        "provider": info.provider,
        "description": info.description,
    }


def describe(models: list[ModelInfo], *, detailed: bool = False) -> str:
    """The table of ``models`` and, below it, each load error, failed newer version and (``detailed``)
    description."""
    rows = []
    for info in models:
        status = ("stale" if info.stale else "ready") if info.ready else "FAILED"
        rows.append(
            [
                info.name,
                status,
                f"{info.input_name} {_shape(info.input_shape)}",
                f"{info.output_name} {_shape(info.output_shape)}",
                len(info.labels) or "",
                _batching(info) if info.ready else "-",
                info.provider or "-",
            ]
        )
    lines = [
        format_table(
            ["model", "status", "input", "explained tensor", "classes", "batching", "provider"], rows
        )
    ]
    for info in models:
        if not info.ready:
            lines.append(f"\n{info.name}: {info.error}")
            continue
        if info.stale:
            lines.append(
                f"\n{info.name}: its changed files failed to load; the last good version "
                f"({info.version}) keeps serving: {info.candidate_error}"
            )
        if detailed and info.description:
            lines.append(f"\n{info.description}")
    return "\n".join(lines)


@guarded
def run(args: argparse.Namespace) -> int:
    with open_client(args) as client, server_errors(client.address):
        models = [client.get_model(args.name)] if args.name else client.list_models()
    if args.json:
        print(dumps({"server": args.server, "models": [model_record(m) for m in models]}))
        return EXIT_OK
    if not models:
        print(f"the server at {args.server} serves no models")
        return EXIT_OK
    print(describe(models, detailed=bool(args.name)))
    return EXIT_OK
