"""``--text`` for ``mollify explain`` and ``mollify compare``: texts explained per token.

The model's tokenizer comes from the server (``ModelInfo.tokenizer``, see :mod:`service.text`);
the CLI sends the ids and the attention mask. ``explain`` writes, per text ``text<k>``:

- ``text<k>.attribution.npy`` and ``text<k>.standard_error.npy``: float32 ``(n_tokens,)``, the
  text's tokens only (padding left out), in the order of the JSON's ``tokens``;
- ``text<k>.json``: the summary of a file input plus ``text``, ``tokens``, ``attribution``,
  ``standard_error`` and ``truncated``;
- ``text<k>.tokens.png``: the tokens highlighted by attribution, with a colour bar.

On a terminal the tokens are printed on ANSI background colours; otherwise (pipes, ``NO_COLOR``)
as ``token(+0.123±0.004)``. ``compare`` writes ``text1.compare.{png,npz,json}``: methods × tokens.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from estimator.method import Method
from service.cli import inputs as input_files
from service.cli import render, render_text
from service.cli.connection import open_client
from service.cli.explain_command import (
    degenerate_noise_warning,
    explain_inputs,
    fetch_model,
    figure_title,
    summarise,
)
from service.cli.output import EXIT_OK, BadInputError, OutputError, UsageError, dumps
from service.client import ModelInfo, TargetLike, as_target
from service.text import EncodedText, TextError, TextExplanation, TextTokenizer, text_explanations

__all__ = [
    "add_text_argument",
    "check_text_or_files",
    "encode_texts",
    "explain_texts",
    "text_items",
    "use_colour",
    "write_text_explanation",
]


def add_text_argument(parser: argparse.ArgumentParser, *, several: bool) -> None:
    """``--text``: one string (compare) or several, repeatable (explain)."""
    if several:
        parser.add_argument(
            "--text",
            "-t",
            action="extend",
            nargs="+",
            metavar="TEXT",
            help="text models: explain these texts (repeatable; tokenized with the model's tokenizer) "
            "instead of input files",
        )
    else:
        parser.add_argument(
            "--text", "-t", metavar="TEXT", help="text models: compare on this text instead of a file"
        )


def check_text_or_files(texts: Sequence[str] | str | None, files: Sequence[str] | str | None) -> bool:
    """Whether the command works on text; exactly one of ``--text`` and input files must be given."""
    has_files = bool(files) if not isinstance(files, str) else True
    if texts and has_files:
        raise UsageError("--text: give texts or input files, not both")
    if not texts and not has_files:
        raise UsageError("expected input files or --text TEXT")
    return bool(texts)


def encode_texts(info: ModelInfo, texts: Sequence[str]) -> tuple[TextTokenizer, list[EncodedText]]:
    """Tokenize ``texts`` with the model's tokenizer; a model without one is a usage error."""
    try:
        tokenizer = TextTokenizer(info)
        encoded = tokenizer.encode(texts)
    except TextError as err:
        raise BadInputError(f"--text: {err}") from None
    for index, item in enumerate(encoded, start=1):
        if item.truncated:
            print(
                f"warning: text {index}: longer than the {tokenizer.length} tokens {info.name} reads; "
                f"the rest was dropped",
                file=sys.stderr,
            )
    return tokenizer, encoded


def text_items(encoded: Sequence[EncodedText]) -> list[input_files.LoadedInput]:
    """The texts as inputs named ``text1``, ``text2``, ... (for summaries and titles)."""
    return [
        input_files.LoadedInput(f"text{k}", item.text, item.ids.astype(np.float32), "tensor")
        for k, item in enumerate(encoded, start=1)
    ]


def use_colour(stream: TextIO) -> bool:
    """ANSI colours only on a terminal, and never with ``NO_COLOR`` set (https://no-color.org)."""
    return bool(getattr(stream, "isatty", lambda: False)()) and not os.environ.get("NO_COLOR")


def write_text_explanation(
    out_dir: Path,
    item: input_files.LoadedInput,
    explained: TextExplanation,
    info: ModelInfo,
    *,
    style: render.HeatmapStyle,
    figures: bool,
    truncated: bool,
) -> dict[str, Any]:
    """Write the per-token arrays, the JSON summary and the highlighted-tokens PNG; return the summary."""
    summary = summarise(explained.explanation, item, info)
    summary.update(
        {
            "text": explained.text,
            "tokens": list(explained.tokens),
            "attribution": explained.attribution,
            "standard_error": explained.standard_error,
            "truncated": truncated,
        }
    )
    stem = (
        item.name if explained.explanation.rank == 0 else f"{item.name}.rank{explained.explanation.rank + 1}"
    )
    files: dict[str, str] = {}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for key in ("attribution", "standard_error"):
            path = out_dir / f"{stem}.{key}.npy"
            np.save(path, np.asarray(getattr(explained, key), dtype=np.float32))
            files[key] = str(path)
        if figures:
            title = figure_title(info, item, explained.explanation).split("\n", 1)[1]
            figure = render_text.render_tokens(
                out_dir / f"{stem}.tokens.png",
                explained.tokens,
                explained.attribution,
                title=f"{info.name}\n{title}",
                style=style,
            )
            files["tokens_figure"] = str(figure)
        summary["files"] = {**files, "summary": str(out_dir / f"{stem}.json")}
        (out_dir / f"{stem}.json").write_text(dumps(summary) + "\n")
    except OSError as err:
        raise OutputError(f"--out: cannot write to {str(out_dir)!r}: {err.strerror or err}") from None
    return summary


def print_text_explanation(
    summary: dict[str, Any],
    explained: TextExplanation,
    style: render.HeatmapStyle,
    stream: TextIO | None = None,
) -> None:
    out = stream or sys.stdout
    target, prediction = summary["target"], summary["prediction"]
    line = f"{explained.text!r}: explained {target['text']}"
    if "score" in target:
        line += f", score {target['score']:.4g}"
    if prediction is not None:
        line += f"; predicted {prediction['label'] or prediction['index']}"
    print(line, file=out)
    result = explained.explanation
    print(f"  {result.description} · {result.samples} samples · seed {result.seed}", file=out)
    if use_colour(out):
        print("  " + render_text.colour_tokens(explained.tokens, explained.attribution, style), file=out)
    else:
        print(
            "  "
            + render_text.plain_tokens(explained.tokens, explained.attribution, explained.standard_error),
            file=out,
        )
    if summary.get("files"):
        print("  wrote " + ", ".join(summary["files"].values()), file=out)


def explain_texts(
    args: argparse.Namespace,
    *,
    method: Method,
    target: TargetLike,
    seed: int | None,
    style: render.HeatmapStyle,
) -> int:
    """``mollify explain --text``: explain, write and print every text."""
    if args.lower is not None or args.upper is not None:
        raise UsageError(
            "--lower/--upper: a text model's bounds are its embedding table's; leave them out with --text"
        )
    with open_client(args) as client:
        info = fetch_model(client, args.model)
        tokenizer, encoded = encode_texts(info, args.text)
        ids, extra = tokenizer.request(encoded)
        results = explain_inputs(
            client,
            info.name,
            ids,
            method=method,
            target=target,
            seed=seed,
            label=f"explaining with {info.name}",
            extra_inputs=extra,
            explained_input=getattr(args, "explained_input", ""),
        )
    explained = _per_token(encoded, results)
    items = text_items(encoded)
    summaries = []
    for text in explained:
        index = text.explanation.instance_index
        summary = write_text_explanation(
            args.out,
            items[index],
            text,
            info,
            style=style,
            figures=not args.no_figures,
            truncated=encoded[index].truncated,
        )
        summaries.append(summary)
        if not args.json:
            print_text_explanation(summary, text, style)
        warning = degenerate_noise_warning(text.explanation)
        if warning:
            print(f"warning: text {index + 1}: {warning}", file=sys.stderr)
    if args.json:
        print(dumps({"model": info.name, "out": str(args.out), "explanations": summaries}))
    return EXIT_OK


def _per_token(encoded: Sequence[EncodedText], results: Sequence[Any]) -> list[TextExplanation]:
    try:
        return text_explanations(encoded, results)
    except TextError as err:
        raise BadInputError(f"--text: {err}") from None


def compare_text(args: argparse.Namespace, specs: Sequence[Any], *, target: TargetLike, seed: int) -> int:
    """``mollify compare --text``: one text, every method; a methods × tokens figure."""
    from service.cli.compare_command import print_comparison
    from service.cli.method_flags import method_for_spec

    if args.lower is not None or args.upper is not None:
        raise UsageError(
            "--lower/--upper: a text model's bounds are its embedding table's; leave them out with --text"
        )
    with open_client(args) as client:
        info = fetch_model(client, args.model)
        tokenizer, encoded = encode_texts(info, [args.text])
        ids, extra = tokenizer.request(encoded)
        results = []
        for spec in specs:
            [result] = explain_inputs(
                client,
                info.name,
                ids,
                method=method_for_spec(spec, args),
                target=target,
                seed=seed,
                label=f"{spec.title:>18}",
                extra_inputs=extra,
            )
            results.append(result)
    explained = _per_token(encoded, results)
    item = text_items(encoded)[0]
    first = results[0]
    from service.cli.explain_command import target_text

    text = target_text(info, first, as_target(target).selection)
    document: dict[str, Any] = {
        "model": info.name,
        "input": item.source,
        "text": item.source,
        "tokens": list(encoded[0].tokens),
        "target": {
            "index": first.target_index,
            "label": info.labels[first.target_index]
            if first.target_index is not None and first.target_index < len(info.labels)
            else None,
            "text": text,
        },
        "seed": first.seed,
        "methods": [
            {
                "key": spec.key,
                "title": spec.title,
                "method": one.explanation.description,
                "samples": one.explanation.samples,
                "gradient_evaluations": one.explanation.gradient_evaluations,
                "relative_error": one.explanation.relative_error,
                "inherent_noise": one.explanation.inherent_noise,
                "computing_ms": one.explanation.computing_ms,
                "attribution": one.attribution,
                "standard_error": one.standard_error,
                "attribution_sum": float(np.sum(one.attribution)),
            }
            for spec, one in zip(specs, explained, strict=True)
        ],
    }
    stem = f"{item.name}.compare"
    out_dir: Path = args.out
    files: dict[str, str] = {}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        arrays = {spec.key: one.attribution for spec, one in zip(specs, explained, strict=True)}
        np.savez(out_dir / f"{stem}.npz", **arrays)  # type: ignore[arg-type]
        files["attributions"] = str(out_dir / f"{stem}.npz")
        if not args.no_figures:
            title = f"{info.name} · {text} · seed {first.seed}"
            panels = [(spec.title, one.attribution) for spec, one in zip(specs, explained, strict=True)]
            files["figure"] = str(
                render_text.render_token_comparison(
                    out_dir / f"{stem}.png", encoded[0].tokens, panels, title=title
                )
            )
        document["files"] = {**files, "summary": str(out_dir / f"{stem}.json")}
        (out_dir / f"{stem}.json").write_text(dumps(document) + "\n")
    except OSError as err:
        raise OutputError(f"--out: cannot write to {str(out_dir)!r}: {err.strerror or err}") from None
    if args.json:
        print(dumps(document))
    else:
        print_comparison(document)
    return EXIT_OK
