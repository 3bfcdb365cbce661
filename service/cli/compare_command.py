"""``mollify compare``: one input, several methods side by side in one figure.

The default grid is the papers' figure (Zhou et al. 2024, AdaptGrad, Figure 6): rows Gradient, Gradient × Input and
Integrated Gradients; columns plain, SmoothGrad and AdaptGrad (so IG's row is IG, S-IG, A-IG).
Every method uses the same seed and the same options (samples, kernel, ...), one request each.

Writes ``<name>.compare.png`` (images: a grid of maps; tabular rows: a features × methods matrix),
``<name>.compare.npz`` (one attribution per method key) and ``<name>.compare.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from service.cli import inputs as input_files
from service.cli import render
from service.cli.connection import add_connection_arguments, open_client
from service.cli.explain_command import (
    add_output_arguments,
    bounds_from_args,
    explain_inputs,
    feature_names,
    fetch_model,
    label_of,
    seed_from_args,
    target_from_args,
    target_text,
)
from service.cli.method_flags import (
    DEFAULT_COMPARE_METHODS,
    MethodSpec,
    add_method_arguments,
    add_request_arguments,
    method_for_spec,
    parse_method_list,
)
from service.cli.output import (
    EXIT_CODES_HELP,
    EXIT_OK,
    OutputError,
    UsageError,
    dumps,
    format_table,
    guarded,
)
from service.client import ExplainerClient, InstanceExplanation, ModelInfo, TargetLike, TopKTarget, as_target
from service.vocabulary import Selection


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="one input, several methods side by side in one figure",
        description="Explain one input with several methods and draw them side by side. METHODS is a "
        "comma-separated list of PRESET[:BASE]: PRESET is grad (vanilla), smoothgrad, adaptgrad, "
        "truncgrad, noisegrad or fusiongrad; BASE is grad (default), gxi (gradient × input) or ig "
        "(integrated gradients).",
        epilog=EXIT_CODES_HELP,
    )
    from service.cli import text_inputs  # it builds on the explain command

    parser.add_argument(
        "input", nargs="?", metavar="INPUT", help="one input file: .npy, .npz, .png, .jpg or .csv"
    )
    text_inputs.add_text_argument(parser, several=False)
    parser.add_argument("--model", "-m", required=True, help="the model's name (see `mollify models`)")
    parser.add_argument(
        "--methods",
        default=",".join(DEFAULT_COMPARE_METHODS),
        help=f"methods to compare (default: {','.join(DEFAULT_COMPARE_METHODS)})",
    )
    parser.add_argument(
        "--index",
        type=int,
        default=0,
        metavar="K",
        help="which instance of a file holding several (CSV rows, array batches) to use (default: 0)",
    )
    parser.add_argument(
        "--columns", type=int, metavar="N", help="maps per row (default: one column per preset)"
    )
    add_output_arguments(parser)
    add_request_arguments(parser)
    parser.add_argument(
        "--tensor", metavar="NAME", help="explain this graph tensor instead of the configured one"
    )
    add_method_arguments(parser, exclude=("method", "base", "mode", "scale"))
    render.add_render_arguments(parser)
    add_connection_arguments(parser)
    parser.set_defaults(func=run)


def default_columns(specs: list[MethodSpec]) -> int:
    """One column per distinct preset when the list is a full presets × bases grid, else up to 4."""
    presets = list(dict.fromkeys(spec.preset for spec in specs))
    if len(specs) % len(presets) == 0 and len(specs) > len(presets):
        return len(presets)
    return min(4, len(specs))


def compare_methods(
    client: ExplainerClient,
    info: ModelInfo,
    item: input_files.LoadedInput,
    specs: list[MethodSpec],
    args: argparse.Namespace,
    *,
    target: TargetLike,
    seed: int,
    lower: Any = None,
    upper: Any = None,
) -> list[InstanceExplanation]:
    """One explanation of ``item`` per spec, all with the same seed and target."""
    results = []
    for spec in specs:
        [result] = explain_inputs(
            client,
            info.name,
            item.tensor[np.newaxis],
            method=method_for_spec(spec, args),
            target=target,
            seed=seed,
            lower=lower,
            upper=upper,
            label=f"{spec.title:>18}",
        )
        results.append(result)
    return results


def write_comparison(
    out_dir: Path,
    item: input_files.LoadedInput,
    info: ModelInfo,
    spec: input_files.InputSpec,
    specs: list[MethodSpec],
    results: list[InstanceExplanation],
    *,
    style: render.HeatmapStyle,
    columns: int,
    figures: bool = True,
    stem: str | None = None,
    selection: Selection | None = None,
) -> dict[str, Any]:
    """Write the figure, the arrays and the JSON of a comparison; return the JSON document.

    ``selection``: the request's target, which names region and detection targets.
    """
    stem = stem or f"{item.name}.compare"
    first = results[0]
    label = label_of(info, first.target_index)
    text = target_text(info, first, selection)
    title = f"{info.name} · {item.label} · {text} · seed {first.seed}"
    document: dict[str, Any] = {
        "model": info.name,
        "input": item.source,
        "target": {"index": first.target_index, "label": label, "text": text},
        "seed": first.seed,
        "methods": [
            {
                "key": method_spec.key,
                "title": method_spec.title,
                "method": result.description,
                "samples": result.samples,
                "gradient_evaluations": result.gradient_evaluations,
                "relative_error": result.relative_error,
                "inherent_noise": result.inherent_noise,
                "computing_ms": result.computing_ms,
                "attribution_sum": float(np.sum(result.attribution)),
            }
            for method_spec, result in zip(specs, results, strict=True)
        ],
    }
    files: dict[str, str] = {}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        arrays = {
            method_spec.key: np.asarray(r.attribution, dtype=np.float32)
            for method_spec, r in zip(specs, results, strict=True)
        }
        np.savez(out_dir / f"{stem}.npz", **arrays)  # type: ignore[arg-type]
        files["attributions"] = str(out_dir / f"{stem}.npz")
        figure = (
            _figure(out_dir / f"{stem}.png", item, info, spec, specs, results, style, columns, title)
            if figures
            else None
        )
        if figure is not None:
            files["figure"] = str(figure)
        document["files"] = {**files, "summary": str(out_dir / f"{stem}.json")}
        (out_dir / f"{stem}.json").write_text(dumps(document) + "\n")
    except OSError as err:
        raise OutputError(f"--out: cannot write to {str(out_dir)!r}: {err.strerror or err}") from None
    return document


def _figure(
    path: Path,
    item: input_files.LoadedInput,
    info: ModelInfo,
    spec: input_files.InputSpec,
    specs: list[MethodSpec],
    results: list[InstanceExplanation],
    style: render.HeatmapStyle,
    columns: int,
    title: str,
) -> Path | None:
    titles = [method_spec.title for method_spec in specs]
    if item.kind == "image":
        image = input_files.display_image(item.tensor, spec)
        layout = input_files.image_layout(spec.input_shape, spec.preprocessing.channels)
        if image is None or layout is None:
            return None
        maps = []
        for result in results:
            attribution = np.asarray(result.attribution)
            maps.append(render.to_map(attribution, layout[0] if attribution.ndim == 3 else None))
        if any(m.shape != image.shape[:2] for m in maps):
            return None
        return render.render_comparison(
            path, image, list(zip(titles, maps, strict=True)), columns=columns, title=title, style=style
        )
    if item.kind == "tabular":
        size = np.asarray(results[0].attribution).size
        panels = [(t, np.asarray(r.attribution)) for t, r in zip(titles, results, strict=True)]
        return render.render_feature_comparison(path, feature_names(info, size), panels, title=title)
    return None


def print_comparison(document: dict[str, Any]) -> None:
    rows = [
        [
            m["title"],
            m["samples"],
            f"{100 * m['relative_error']:.2f}%" if m["relative_error"] else "-",
            f"{m['inherent_noise']:.4f}" if m["inherent_noise"] else "-",
            f"{m['computing_ms']:.0f}",
            m["method"],
        ]
        for m in document["methods"]
    ]
    target = document["target"]
    what = target.get("text") or f"class {target['index']}"
    print(f"{document['input']}: {what}, seed {document['seed']}")
    print(
        format_table(
            ["method", "samples", "rel. error", "inherent noise", "ms", "description"], rows, "lrrrrl"
        )
    )
    print("wrote " + ", ".join(document["files"].values()))


@guarded
def run(args: argparse.Namespace) -> int:
    specs = parse_method_list(args.methods)
    target = target_from_args(args)
    if isinstance(as_target(target).selection, TopKTarget):
        raise UsageError(
            f"--target: compare explains one class; expected an index or 'predicted', got {args.target!r}"
        )
    seed = seed_from_args(args)
    if seed is None:
        # One seed for every method, so their noise draws are the same and the maps comparable.
        seed = int(np.random.default_rng().integers(0, 2**31))
    from service.cli import text_inputs

    if text_inputs.check_text_or_files(args.text, args.input):
        return text_inputs.compare_text(args, specs, target=target, seed=seed)
    lower, upper = bounds_from_args(args)
    columns = args.columns or default_columns(specs)
    if columns < 1:
        raise UsageError(f"--columns: expected a positive number, got {columns}")
    try:
        style = render.style_from_args(
            args, nonnegative=getattr(args, "transform", None) not in (None, "none")
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    with open_client(args) as client:
        info = fetch_model(client, args.model)
        spec = input_files.InputSpec.from_model_info(info)
        loaded = input_files.load_inputs([args.input], spec)
        if not 0 <= args.index < len(loaded):
            raise UsageError(
                f"--index: {args.input!r} holds {len(loaded)} inputs (0 to {len(loaded) - 1}), got {args.index}"
            )
        if len(loaded) > 1 and not args.json:
            print(
                f"{args.input} holds {len(loaded)} inputs; comparing #{args.index} (choose with --index)",
                file=sys.stderr,
            )
        item = loaded[args.index]
        results = compare_methods(
            client, info, item, specs, args, target=target, seed=seed, lower=lower, upper=upper
        )
    document = write_comparison(
        args.out,
        item,
        info,
        spec,
        specs,
        results,
        style=style,
        columns=columns,
        figures=not args.no_figures,
        selection=as_target(target).selection,
    )
    if args.json:
        print(dumps(document))
    else:
        print_comparison(document)
    return EXIT_OK
