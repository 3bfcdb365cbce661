"""``mollify batch``: explain a whole dataset offline, on this machine or on a Ray cluster.

    mollify batch -m breast_cancer_mlp rows.csv -o out/ [--engine ray] [method flags as in explain]

The model comes from the same repository and config as the server's (``--model-repository``,
default the bundled demo models) or straight from an ONNX file. See :mod:`service.batch` for
blocks, seeds, output layout and resumption.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.cli.method_flags import (
    add_dense_target_arguments,
    add_method_arguments,
    checked_seed,
    dense_target_from_args,
    method_from_args,
    number_or_array,
)
from service.cli.output import (
    EXIT_CODES_HELP,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    BadInputError,
    CliError,
    OutputError,
    UsageError,
    dumps,
    guarded,
)

if TYPE_CHECKING:
    from service.batch.job import BatchSummary
    from service.batch.work import BatchTarget

REPOSITORY_ENV = "MOLLIFY_MODEL_REPOSITORY"
# As service.batch.job.ENGINES and service.batch.output.FORMATS, which are imported only when the
# command runs (they pull in the estimator and pyarrow, which `mollify --help` does not need).
ENGINES = ("local", "ray")
FORMATS = ("parquet", "npz")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "batch",
        help="explain a whole dataset (CSV/Parquet, image folder, .npy/.npz) offline, locally or on Ray",
        description="Explain every row of a dataset without a server: a CSV or Parquet table, a folder of "
        "images or .npy/.npz arrays, streamed in blocks. Writes Parquet (or .npz) shards, a manifest and "
        "errors.csv (rows that could not be explained, with the reason) under --out; rerunning the same "
        "command resumes an interrupted job. Row i is explained with a seed derived from (--seed, i), so "
        "results do not depend on the engine, block size or workers.",
        epilog=EXIT_CODES_HELP,
    )
    parser.add_argument(
        "data",
        metavar="DATA",
        type=Path,
        help="a .csv or .parquet table, a .npy or .npz file, or a folder of images",
    )
    parser.add_argument(
        "--model",
        "-m",
        required=True,
        help="a model name of --model-repository, a model folder, or an ONNX file",
    )
    parser.add_argument("--out", "-o", type=Path, required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--format", choices=FORMATS, default="parquet", help="shard format (default: parquet)"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    run = parser.add_argument_group("execution")
    run.add_argument(
        "--engine",
        choices=ENGINES,
        default="local",
        help="local: this machine's cores; ray: a Ray Data actor pool (needs the ray extra) (default: local)",
    )
    run.add_argument(
        "--workers",
        type=_positive,
        metavar="N",
        help="worker processes (local) or actors (ray), each holding one session "
        "(default: this machine's cores)",
    )
    run.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        help="an existing Ray cluster, e.g. ray://head:10001 or auto (default: a local Ray instance)",
    )
    run.add_argument(
        "--block-rows",
        type=_positive,
        default=256,
        metavar="N",
        help="rows per block: the unit of work, of output shards and of resumption (default: 256)",
    )
    run.add_argument(
        "--intra-op-threads",
        type=_positive,
        default=1,
        metavar="N",
        help="ONNX Runtime threads per worker (default: 1)",
    )
    run.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where sessions run (default: auto, CUDA when it really loads)",
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model-repository",
        type=Path,
        metavar="DIR",
        help=f"the server's model repository (default: ${REPOSITORY_ENV}, else the bundled demo models)",
    )
    model.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="gradient-graph cache folder (default: the server's, ~/.cache/mollify/gradient-graphs)",
    )
    model.add_argument("--input-name", help="ONNX file without config.json: the input to explain")
    model.add_argument(
        "--tensor", metavar="NAME", help="explain this graph tensor instead of the configured one"
    )
    model.add_argument(
        "--lower", help="input domain's lower bound: a number or a .npy file (default: the config's)"
    )
    model.add_argument(
        "--upper", help="input domain's upper bound: a number or a .npy file (default: the config's)"
    )
    model.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="NAME",
        help=".npz data: explain only this array (repeatable; default: every array)",
    )
    request = parser.add_argument_group("request")
    request.add_argument(
        "--target",
        default="predicted",
        help="a class index, or 'predicted' (the arg-max at the clean input) (default: predicted); "
        "for maps and detector heads see --region and --detection",
    )
    request.add_argument(
        "--seed",
        type=int,
        help="job seed; row i uses a seed derived from (seed, i) (default: random, or the seed "
        "of the job being resumed)",
    )
    add_dense_target_arguments(parser)
    add_method_arguments(parser)
    parser.set_defaults(func=run_command)


def _target(args: argparse.Namespace) -> BatchTarget:
    """The target every row explains: ``--region``/``--detection`` as in ``mollify explain``, else ``--target``."""
    dense = dense_target_from_args(args)
    if dense is not None:
        return dense
    text = args.target
    if text.strip().lower() == "predicted":
        return None
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise UsageError(
            f"--target: batch explains a class index or 'predicted' per row (or --region / --detection), "
            f"got {text!r}"
        )
    return value


def _repository(args: argparse.Namespace) -> Path:
    if args.model_repository is not None:
        return Path(args.model_repository)
    if os.environ.get(REPOSITORY_ENV):
        return Path(os.environ[REPOSITORY_ENV])
    from models.demo import repository_path

    return repository_path()


def _seed(args: argparse.Namespace) -> int:
    from service.batch.output import JobConflictError, OutputStore

    if args.seed is not None:
        # Any seed: row_seed maps (seed, row) to the rows' 63-bit seeds (the int64 seed column).
        return checked_seed(args.seed)
    try:
        recorded = OutputStore.recorded_job(args.out)
    except JobConflictError as err:
        raise OutputError(str(err)) from None
    if recorded is not None and isinstance(recorded.get("seed"), int):
        return int(recorded["seed"])
    return secrets.randbits(63)


def print_summary(summary: BatchSummary, stream: Any = None) -> None:
    """Three lines for humans: rows and speed, failures by reason, where the output is."""
    from service.batch.progress import format_duration

    out = stream or sys.stdout
    relative = summary.mean_relative_error
    error_text = f", mean relative error {100 * relative:.2f}%" if relative == relative else ""
    print(
        f"explained {summary.explained} of {summary.rows} rows ({summary.failed} failed) in "
        f"{format_duration(summary.seconds)}, {summary.rows_per_second:.1f} rows/s{error_text}",
        file=out,
    )
    if summary.failures_by_reason:
        reasons = ", ".join(f"{reason} {count}" for reason, count in summary.failures_by_reason.items())
        print(f"failures: {reasons} (see {summary.errors_file})", file=out)
    skipped = f"; {summary.blocks_skipped} done by an earlier run" if summary.blocks_skipped else ""
    print(
        f"wrote {summary.out}/data ({summary.blocks} blocks{skipped}) and {summary.out}/manifest.json",
        file=out,
    )


@guarded
def run_command(args: argparse.Namespace) -> int:
    from service.batch.engine_ray import RayMissingError
    from service.batch.job import BatchJob, JobSetupError, run_batch
    from service.batch.model import ModelLoadError, resolve_model
    from service.batch.output import JobConflictError
    from service.batch.progress import RowProgress
    from service.batch.sources import SourceError, open_source
    from service.batch.work import WorkSpec
    from service.settings import default_cache_dir

    method = method_from_args(args)
    target = _target(args)
    lower, upper = number_or_array(args.lower, "--lower"), number_or_array(args.upper, "--upper")
    seed = _seed(args)
    try:
        model = resolve_model(
            args.model,
            repository=_repository(args),
            cache_dir=args.cache_dir or default_cache_dir(os.environ),
            input_name=args.input_name,
            lower=lower,
            upper=upper,
            tensor=args.tensor,
        )
    except ModelLoadError as err:
        raise CliError("BAD_MODEL", str(err), EXIT_USAGE) from None
    try:
        source = open_source(args.data, model, keys=args.key)
    except SourceError as err:
        raise BadInputError(f"DATA: {err}") from None
    spec = WorkSpec(
        model=model,
        source=source,
        method=method,
        target=target,
        seed=seed,
        intra_op_threads=args.intra_op_threads,
        device=args.device,
    )
    job = BatchJob(
        spec=spec,
        out=args.out,
        format=args.format,
        block_rows=args.block_rows,
        engine=args.engine,
        workers=args.workers or os.cpu_count() or 1,
        ray_address=args.ray_address,
    )
    progress: RowProgress | None = None

    def on_progress(done: int, total: int, finished: int) -> None:
        nonlocal progress
        if progress is None:
            progress = RowProgress(total, already=done)
        progress.advance(finished)

    try:
        summary = run_batch(job, on_progress=on_progress)
    except ModelLoadError as err:
        raise CliError("BAD_MODEL", str(err), EXIT_USAGE) from None
    except JobSetupError as err:
        raise UsageError(
            f"{err} (method, --target, --region or --detection does not fit model {model.name!r})"
        ) from None
    except JobConflictError as err:
        raise OutputError(str(err)) from None
    except RayMissingError as err:
        raise CliError("MISSING_DEPENDENCY", str(err), EXIT_USAGE) from None
    except ConnectionError as err:
        raise CliError("UNAVAILABLE", f"--ray-address: {err}", EXIT_UNREACHABLE) from None
    except OSError as err:
        raise OutputError(f"--out: cannot write to {str(args.out)!r}: {err.strerror or err}") from None
    finally:
        if progress is not None:
            progress.close()
    if args.json:
        print(dumps(summary.as_dict()))
    else:
        print_summary(summary)
    return EXIT_OK
