"""``mollify explain``: explain local inputs with a served model and write arrays, JSON and figures.

For each explanation it writes, under ``--out`` (default ``mollify-out``):

- ``<name>.attribution.npy`` and ``<name>.standard_error.npy`` (float32, one input's shape);
- ``<name>.json``: target, prediction, samples, seed, inherent noise, timings, provider, files;
- images: ``<name>.heatmap.png`` (input | attribution | overlay, colour bar);
  tabular rows: ``<name>.bars.png`` (features ranked by |attribution|) and a ranked table on stdout.

``<name>`` is the input's file stem (``digit_3``), with ``_row<k>`` for CSV rows, ``_<i>`` for array
batches and ``.class<c>`` when ``--target top:K`` explains several classes of one input.
The functions here are reused by ``compare`` and ``demo``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from estimator.method import DetectionTarget, Method, RegionTarget
from estimator.targets import detection_of, format_region
from service.cli import inputs as input_files
from service.cli import render
from service.cli.connection import add_connection_arguments, open_client, server_errors
from service.cli.method_flags import (
    add_method_arguments,
    add_request_arguments,
    checked_seed,
    dense_target_from_args,
    method_from_args,
    number_or_array,
    parse_target,
)
from service.cli.output import (
    EXIT_CODES_HELP,
    EXIT_OK,
    CliError,
    OutputError,
    ProgressBar,
    UsageError,
    dumps,
    guarded,
    server_error,
)
from service.client import (
    ExplainerClient,
    ExplainTarget,
    InstanceExplanation,
    ModelInfo,
    TargetLike,
    as_target,
)
from service.vocabulary import Selection

DEFAULT_OUT = "mollify-out"


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "explain",
        help="explain inputs (.npy/.npz, PNG/JPEG, CSV rows) with a served model",
        description="Explain one or more inputs with a model of the server and write the attribution, its "
        "standard error, a JSON summary and a figure per explanation. Presets: --method vanilla "
        "(mode=none), smoothgrad (mode=input, scale=fixed; the default), adaptgrad (input, adaptive), "
        "truncgrad (input, truncated), noisegrad (parameter), fusiongrad (fusion, fixed).",
        epilog=EXIT_CODES_HELP,
    )
    from service.cli import text_inputs  # it builds on this module

    parser.add_argument(
        "inputs", nargs="*", metavar="INPUT", help="input files: .npy, .npz, .png, .jpg, .csv"
    )
    text_inputs.add_text_argument(parser, several=True)
    parser.add_argument("--model", "-m", required=True, help="the model's name (see `mollify models`)")
    add_output_arguments(parser)
    parser.add_argument(
        "--top",
        type=int,
        default=10,
        metavar="K",
        help="tabular inputs: features in the terminal table (the bar chart shows 2·K) (default: 10)",
    )
    add_request_arguments(parser)
    parser.add_argument(
        "--tensor",
        metavar="NAME",
        help="explain this graph tensor instead of the model's configured one (e.g. probabilities)",
    )
    parser.add_argument(
        "--explained-input",
        metavar="NAME",
        default="",
        help="attribute to this float tensor of the graph instead of the model's explained input (layer "
        "attribution: an embedding output, a feature map); its bounds are the embedding table's for a lookup, "
        "else give --lower and --upper",
    )
    add_method_arguments(parser)
    render.add_render_arguments(parser)
    add_connection_arguments(parser)
    parser.set_defaults(func=run)


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """``--out``, ``--json`` and ``--no-figures``, shared by the commands that write files."""
    parser.add_argument(
        "--out",
        "-o",
        type=Path,
        default=Path(DEFAULT_OUT),
        metavar="DIR",
        help=f"folder for the files written (default: {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--json", action="store_true", help="print a machine-readable JSON document on stdout"
    )
    parser.add_argument("--no-figures", action="store_true", help="write arrays and JSON only, no PNG")


def target_from_args(args: argparse.Namespace) -> TargetLike:
    """The request target of ``--target`` (or ``--region`` / ``--detection``) and ``--tensor``."""
    dense = dense_target_from_args(args)
    target: TargetLike = dense if dense is not None else parse_target(args.target)
    if args.tensor:
        return ExplainTarget(selection=as_target(target).selection, output=args.tensor)
    return target


def seed_from_args(args: argparse.Namespace) -> int | None:
    """``--seed`` checked (:func:`checked_seed`); ``None`` when not given (the server draws one)."""
    return checked_seed(args.seed) if args.seed is not None else None


def fetch_model(client: ExplainerClient, name: str) -> ModelInfo:
    """The model's description; a model that failed to load is an error (exit 3)."""
    with server_errors(client.address):
        info = client.get_model(name)
    if not info.ready:
        raise server_error("FAILED_PRECONDITION", f"model {name!r} is not ready: {info.error or 'loading'}")
    return info


def explain_inputs(
    client: ExplainerClient,
    model: str,
    batch: np.ndarray,
    *,
    method: Method,
    target: TargetLike = "predicted",
    seed: int | None = None,
    lower: float | np.ndarray | None = None,
    upper: float | np.ndarray | None = None,
    label: str = "explaining",
    progress_stream: TextIO | None = None,
    extra_inputs: Mapping[str, np.ndarray] | None = None,
    explained_input: str = "",
) -> list[InstanceExplanation]:
    """Explain ``batch`` ``(B, *input_shape)``; on a terminal, stream and draw a progress bar.

    Off a terminal (pipes, CI, ``--json``) the plain unary call is used and nothing is drawn.
    ``extra_inputs``: the model's other inputs by name (a text model's attention mask);
    ``explained_input``: a graph tensor to attribute to instead of the model's (``""``: the model's).
    """
    bar = ProgressBar(label, progress_stream)
    options: dict[str, Any] = {
        "method": method,
        "target": target,
        "seed": seed,
        "lower": lower,
        "upper": upper,
        "extra_inputs": extra_inputs,
    }
    if explained_input:
        options["explained_input"] = explained_input
    with server_errors(client.address):
        if not bar.enabled:
            return client.explain(model, batch, **options)
        results: list[InstanceExplanation] | None = None
        try:
            for event in client.explain_stream(model, batch, **options):
                if isinstance(event, list):
                    results = event
                    continue
                per_instance = max(1, event.explanations_total // max(1, len(batch)))
                position = (
                    f" {event.instance_index * per_instance + event.rank + 1}/{event.explanations_total}"
                )
                bar.label = label + (position if event.explanations_total > 1 else "")
                bar.update(event.samples_done, event.samples_planned, event.relative_error)
        finally:
            bar.close()
    if results is None:
        raise server_error("INTERNAL", "the server closed the stream without sending the results")
    return results


def label_of(info: ModelInfo, index: int | None) -> str | None:
    if index is None or not 0 <= index < len(info.labels):
        return None
    return info.labels[index]


def class_text(info: ModelInfo, index: int | None) -> str:
    """``class 0 (malignant)``; the label is left out when it only repeats the index (digits)."""
    if index is None:
        return "an explicit cotangent"
    label = label_of(info, index)
    return f"class {index}" + (f" ({label})" if label and label != str(index) else "")


def target_text(info: ModelInfo, explanation: InstanceExplanation, selection: Selection | None = None) -> str:
    """What was explained: ``class 3``, ``the sum over :,10:20,5``, ``class 2 (dog) of detection 17``."""
    if isinstance(selection, RegionTarget):
        if selection.mask is not None:
            where = f"a mask of {int(np.count_nonzero(selection.mask))} elements"
        else:
            where = format_region(selection.axes)
        return f"the {selection.reduction} over {where}"
    if isinstance(selection, DetectionTarget) and explanation.cotangent is not None:
        detection, class_index = detection_of(selection, explanation.cotangent)
        return f"{class_text(info, class_index)} of detection {detection}"
    return class_text(info, explanation.target_index)


def _dense_target_summary(explanation: InstanceExplanation, selection: Selection | None) -> dict[str, Any]:
    """Region and detection targets: where, and the explained scalar's value <cotangent, outputs>."""
    if not isinstance(selection, RegionTarget | DetectionTarget) or explanation.cotangent is None:
        return {}
    value = float(
        np.vdot(np.asarray(explanation.cotangent, np.float64), np.asarray(explanation.outputs, np.float64))
    )
    if isinstance(selection, DetectionTarget):
        detection, _ = detection_of(selection, explanation.cotangent)
        return {"kind": "detection", "detection": detection, "layout": selection.layout, "score": value}
    where: dict[str, Any] = (
        {"mask_elements": int(np.count_nonzero(selection.mask))}
        if selection.mask is not None
        else {"region": format_region(selection.axes)}
    )
    return {"kind": "region", **where, "reduction": selection.reduction, "value": value}


def summarise(
    explanation: InstanceExplanation,
    item: input_files.LoadedInput,
    info: ModelInfo,
    selection: Selection | None = None,
) -> dict[str, Any]:
    """The JSON summary of one explanation (without its file list); ``selection``: the request's target."""
    outputs = np.asarray(explanation.outputs, dtype=np.float64)
    target: dict[str, Any] = {
        "index": explanation.target_index,
        "label": label_of(info, explanation.target_index),
        "rank": explanation.rank,
        "tensor": explanation.output or info.output_name,
        "text": target_text(info, explanation, selection),
    }
    if (
        explanation.target_index is not None
        and outputs.ndim >= 1
        and explanation.target_index < outputs.shape[-1]
    ):
        target["score"] = float(outputs.reshape(-1, outputs.shape[-1])[0, explanation.target_index])
    target.update(_dense_target_summary(explanation, selection))
    prediction: dict[str, Any] | None = None
    if outputs.ndim == 1 and outputs.size > 1:
        predicted = int(np.argmax(outputs))
        prediction = {
            "index": predicted,
            "label": label_of(info, predicted),
            "score": float(outputs[predicted]),
        }
    attribution = np.asarray(explanation.attribution, dtype=np.float64)
    return {
        "model": info.name,
        "input": item.source,
        "name": item.name,
        "method": explanation.description,
        "target": target,
        "prediction": prediction,
        "outputs": outputs,
        "samples": explanation.samples,
        "gradient_evaluations": explanation.gradient_evaluations,
        "seed": explanation.seed,
        "inherent_noise": explanation.inherent_noise,
        "zero_scale_fraction": explanation.zero_scale_fraction,
        "relative_error": explanation.relative_error,
        "standard_error_note": explanation.standard_error_note,
        "attribution_sum": float(attribution.sum()),
        "attribution_shape": list(attribution.shape),
        "timings": {"queued_ms": explanation.queued_ms, "computing_ms": explanation.computing_ms},
        "provider": explanation.provider,
    }


def _stem(item: input_files.LoadedInput, explanation: InstanceExplanation, several_per_input: bool) -> str:
    if several_per_input and explanation.target_index is not None:
        return f"{item.name}.class{explanation.target_index}"
    if several_per_input:
        return f"{item.name}.rank{explanation.rank + 1}"
    return item.name


def figure_title(
    info: ModelInfo,
    item: input_files.LoadedInput,
    explanation: InstanceExplanation,
    selection: Selection | None = None,
) -> str:
    """Two lines: what was explained, and how (method, target, samples, error)."""
    details = [explanation.description, target_text(info, explanation, selection)]
    if f"N={explanation.samples}" not in explanation.description:
        details.append(f"N={explanation.samples}")
    if explanation.relative_error > 0:
        details.append(f"rel. error {100 * explanation.relative_error:.1f}%")
    return f"{info.name} · {item.label}\n" + " · ".join(details)


def write_explanation(
    out_dir: Path,
    stem: str,
    item: input_files.LoadedInput,
    explanation: InstanceExplanation,
    info: ModelInfo,
    spec: input_files.InputSpec,
    *,
    style: render.HeatmapStyle,
    figures: bool = True,
    top: int = 10,
    selection: Selection | None = None,
) -> dict[str, Any]:
    """Write the arrays, the figure and the JSON summary of one explanation; return the summary.

    ``selection`` is the request's target, which names region and detection targets in the summary.
    """
    summary = summarise(explanation, item, info, selection)
    files: dict[str, str] = {}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for key in ("attribution", "standard_error"):
            path = out_dir / f"{stem}.{key}.npy"
            np.save(path, np.asarray(getattr(explanation, key), dtype=np.float32))
            files[key] = str(path)
        if figures:
            figure = _write_figure(out_dir, stem, item, explanation, info, spec, style, top, selection)
            if figure is not None:
                files[figure[0]] = str(figure[1])
        summary["files"] = {**files, "summary": str(out_dir / f"{stem}.json")}
        (out_dir / f"{stem}.json").write_text(dumps(summary) + "\n")
    except OSError as err:
        raise OutputError(f"--out: cannot write to {str(out_dir)!r}: {err.strerror or err}") from None
    return summary


def _write_figure(
    out_dir: Path,
    stem: str,
    item: input_files.LoadedInput,
    explanation: InstanceExplanation,
    info: ModelInfo,
    spec: input_files.InputSpec,
    style: render.HeatmapStyle,
    top: int,
    selection: Selection | None = None,
) -> tuple[str, Path] | None:
    title = figure_title(info, item, explanation, selection)
    attribution = np.asarray(explanation.attribution)
    if item.kind == "image":
        image = input_files.display_image(item.tensor, spec)
        layout = input_files.image_layout(spec.input_shape, spec.preprocessing.channels)
        if image is None or layout is None:
            return None
        attribution_map = render.to_map(attribution, layout[0] if attribution.ndim == 3 else None)
        if attribution_map.shape != image.shape[:2]:
            return None
        path = render.render_heatmap(
            out_dir / f"{stem}.heatmap.png", image, attribution_map, title=title, style=style
        )
        return "heatmap", path
    if item.kind == "tabular" and attribution.size == len(feature_names(info, attribution.size)):
        path = render.render_bar_chart(
            out_dir / f"{stem}.bars.png",
            feature_names(info, attribution.size),
            attribution,
            np.asarray(explanation.standard_error),
            item.raw_features,
            title=title,
            top=2 * top,
        )
        return "bar_chart", path
    return None


def feature_names(info: ModelInfo, count: int) -> list[str]:
    """The model's feature names, or ``x[i]`` when it names none (or not ``count`` of them)."""
    if len(info.feature_names) == count:
        return list(info.feature_names)
    return [f"x[{i}]" for i in range(count)]


def print_explanation(
    summary: dict[str, Any],
    explanation: InstanceExplanation,
    item: input_files.LoadedInput,
    info: ModelInfo,
    *,
    top: int,
    stream: TextIO | None = None,
) -> None:
    """A short human-readable report of one explanation (and a ranked table for tabular inputs)."""
    out = stream or sys.stdout
    target = summary["target"]
    line = f"{item.source}: explained {target.get('text') or class_text(info, target['index'])}"
    if "value" in target:
        line += f", value {target['value']:.4g}"
    if "score" in target:
        line += f", score {target['score']:.4g}"
    if summary["prediction"] is not None:
        line += f"; predicted {class_text(info, summary['prediction']['index'])}"
    print(line, file=out)
    details = [explanation.description, f"{explanation.samples} samples", f"seed {explanation.seed}"]
    if explanation.relative_error > 0:
        details.append(f"rel. error {100 * explanation.relative_error:.2f}%")
    if explanation.inherent_noise > 0:
        details.append(f"inherent noise {explanation.inherent_noise:.4f}")
    details.append(f"{explanation.computing_ms:.0f} ms on {explanation.provider or 'unknown provider'}")
    print("  " + " · ".join(details), file=out)
    if item.kind == "tabular":
        attribution = np.asarray(explanation.attribution).reshape(-1)
        table = render.ranked_table(
            feature_names(info, attribution.size),
            attribution,
            np.asarray(explanation.standard_error),
            item.raw_features,
            top=top,
        )
        print("\n".join("  " + row for row in table.splitlines()), file=out)
    files = summary.get("files", {})
    if files:
        print("  wrote " + ", ".join(files.values()), file=out)


def bounds_from_args(args: argparse.Namespace) -> tuple[float | np.ndarray | None, float | np.ndarray | None]:
    return number_or_array(args.lower, "--lower"), number_or_array(args.upper, "--upper")


@guarded
def run(args: argparse.Namespace) -> int:
    method = method_from_args(args)
    target = target_from_args(args)
    seed = seed_from_args(args)
    lower, upper = bounds_from_args(args)
    if args.top < 1:
        raise UsageError(f"--top: expected a positive number of features, got {args.top}")
    try:
        style = render.style_from_args(args, nonnegative=method.transform != "none")
    except ValueError as err:
        raise UsageError(str(err)) from None
    from service.cli import text_inputs

    if text_inputs.check_text_or_files(args.text, args.inputs):
        return text_inputs.explain_texts(args, method=method, target=target, seed=seed, style=style)
    with open_client(args) as client:
        info = fetch_model(client, args.model)
        spec = input_files.InputSpec.from_model_info(info)
        loaded = input_files.load_inputs(args.inputs, spec)
        results = explain_inputs(
            client,
            info.name,
            input_files.stack(loaded),
            method=method,
            target=target,
            seed=seed,
            lower=lower,
            upper=upper,
            label=f"explaining with {info.name}",
            explained_input=args.explained_input,
        )
    summaries = report(
        results,
        loaded,
        info,
        spec,
        args.out,
        style=style,
        figures=not args.no_figures,
        top=args.top,
        as_json=args.json,
        selection=as_target(target).selection,
    )
    if args.json:
        print(dumps({"model": info.name, "out": str(args.out), "explanations": summaries}))
    return EXIT_OK


def report(
    results: Sequence[InstanceExplanation],
    loaded: Sequence[input_files.LoadedInput],
    info: ModelInfo,
    spec: input_files.InputSpec,
    out_dir: Path,
    *,
    style: render.HeatmapStyle,
    figures: bool,
    top: int,
    as_json: bool,
    selection: Selection | None = None,
) -> list[dict[str, Any]]:
    """Write and (unless ``as_json``) print every explanation; return their summaries in order.

    ``selection``: the request's target (names region and detection targets in summaries and titles).
    """
    several = any(result.rank > 0 for result in results)
    summaries = []
    for result in results:
        if not 0 <= result.instance_index < len(loaded):
            raise CliError(
                "INTERNAL",
                f"the server answered for instance {result.instance_index}, but {len(loaded)} were sent",
                1,
            )
        item = loaded[result.instance_index]
        stem = _stem(item, result, several)
        summary = write_explanation(
            out_dir,
            stem,
            item,
            result,
            info,
            spec,
            style=style,
            figures=figures,
            top=top,
            selection=selection,
        )
        summaries.append(summary)
        if not as_json:
            print_explanation(summary, result, item, info, top=top)
        warning = degenerate_noise_warning(result)
        if warning:
            print(f"warning: {item.source}: {warning}", file=sys.stderr)
    return summaries


# Above this share of zero-scale features an input-noise method is mostly the plain gradient.
DEGENERATE_ZERO_SCALE_FRACTION = 0.5


def degenerate_noise_warning(explanation: InstanceExplanation) -> str:
    """A warning when most features got no input noise (AdaptGrad on inputs that sit on a bound),
    else ``""``."""
    share = explanation.zero_scale_fraction
    if share <= DEGENERATE_ZERO_SCALE_FRACTION:
        return ""
    return (
        f"{100 * share:.0f}% of the features got no noise (their noise scale is 0: they sit on a bound of "
        "the input domain, where AdaptGrad adds none), so this result is close to the plain gradient; "
        "smooth them with truncated sampling (--method truncgrad) or a fixed scale (--method smoothgrad)"
    )
