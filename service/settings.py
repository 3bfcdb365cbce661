"""The server's one frozen settings object, built once at start-up from flags and ``MOLLIFY_*``
environment variables (a flag wins over its variable, a variable over the default).

Nothing deeper in the service reads the environment: components receive this object (or the
values they need) through their constructors. Every setting has one row in :data:`SETTINGS`:
its flag is ``--name-with-dashes``, its variable ``MOLLIFY_NAME_IN_CAPITALS``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.errors import SettingsError
from service.gpu_memory import gpu_free_memory_bytes
from service.memory import available_memory_bytes, format_size

__all__ = [
    "MEMORY_BUDGET_CAP",
    "MEMORY_BUDGET_FLOOR",
    "SETTINGS",
    "Settings",
    "add_arguments",
    "available_cores",
    "cuda_index",
    "default_cache_dir",
    "default_concurrency",
    "default_gpu_memory_budget",
    "default_memory_budget",
    "parse_size",
]

_SIZE_UNITS = {
    "": 1,
    "k": 1 << 10,
    "kb": 1 << 10,
    "kib": 1 << 10,
    "m": 1 << 20,
    "mb": 1 << 20,
    "mib": 1 << 20,
    "g": 1 << 30,
    "gb": 1 << 30,
    "gib": 1 << 30,
}


def parse_size(text: str) -> int:
    """``"64MiB"`` → 67108864; plain integers are bytes; K/M/G suffixes are powers of 1024."""
    match = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", text)
    if match is None or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"expected a byte count such as 1048576, 512KiB or 64MiB, got {text!r}")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true/false, 1/0, yes/no or on/off, got {text!r}")


def _provider_list(text: str) -> tuple[str, ...]:
    """``"CUDAExecutionProvider, CPUExecutionProvider"`` → a tuple of the names, in order."""
    names = tuple(name.strip() for name in text.split(","))
    if not all(names):
        raise ValueError(
            f"expected comma-separated execution provider names such as CUDAExecutionProvider,CPUExecutionProvider, "
            f"got {text!r}"
        )
    return names


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse_or_none(text: str) -> Any:
        return None if text.strip() in ("", "none", "None") else parse(text)

    return parse_or_none


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_concurrency() -> int:
    """Explanations computing at once by default: one per four cores, at least 1 and at most 4.

    ONNX Runtime already spreads one explanation over every core it is given, so on a small
    machine more concurrent explanations only fight for the same cores.
    """
    return max(1, min(4, available_cores() // 4))


MEMORY_BUDGET_FLOOR = 64 << 20
"""Smallest memory budget chosen by default (bytes)."""
MEMORY_BUDGET_CAP = 4 << 30
"""Largest memory budget chosen by default (bytes): beyond, bigger chunks buy no speed."""
# The estimator's own default, for a platform that does not say how much memory there is.
_MEMORY_BUDGET_UNKNOWN = 256 << 20
_MEMORY_BUDGET_RULE = (
    "a quarter of the memory this process may use (its cgroup limit, else the physical memory) divided by "
    "--max-concurrent-requests, kept between 64 MiB and 4 GiB"
)


def default_memory_budget(concurrency: int, available: int | None = None) -> int:
    """The memory budget of one explanation when none is set, in bytes.

    A quarter of ``available`` (default: :func:`service.memory.available_memory_bytes`, the cgroup
    limit, else the physical memory) divided by ``concurrency``, the explanations computing at
    once, and kept within [:data:`MEMORY_BUDGET_FLOOR`, :data:`MEMORY_BUDGET_CAP`]; 256 MiB when the
    platform does not say how much memory there is. The rest is left to the models themselves
    (weights, ONNX Runtime's arenas, which keep what a chunk grew them to), to estimates of a chunk's
    memory that fall short (transformer attention measured 7 % above it) and to other processes:
    half the physical memory per explanation ran a shared 24 GB machine out of memory.
    """
    available = available_memory_bytes() if available is None else available
    if available is None:
        return _MEMORY_BUDGET_UNKNOWN
    return max(MEMORY_BUDGET_FLOOR, min(MEMORY_BUDGET_CAP, available // 4 // max(1, concurrency)))


_GPU_MEMORY_BUDGET_RULE = (
    "half the free memory of the GPU at start-up (or of --gpu-mem-limit when lower) divided by "
    "--max-concurrent-requests, at least 64 MiB"
)


def cuda_index(device: str) -> int | None:
    """The GPU index of a ``cuda`` / ``cuda:N`` device setting; ``None`` for ``auto`` and ``cpu``."""
    match = re.fullmatch(r"cuda(?::(\d+))?", device)
    return None if match is None else int(match.group(1) or 0)


def default_gpu_memory_budget(concurrency: int, free: int, limit: int = 0) -> int:
    """The memory budget of one explanation on a GPU with ``free`` bytes free, in bytes.

    Half of ``free`` (or of ``limit``, the CUDA arena limit, when set and lower) divided by
    ``concurrency``, at least :data:`MEMORY_BUDGET_FLOOR`; the other half is left to the weights,
    cuDNN workspaces and the arena's rounding.
    """
    usable = min(free, limit) if limit else free
    return max(MEMORY_BUDGET_FLOOR, usable // 2 // max(1, concurrency))


def default_cache_dir(environ: Mapping[str, str]) -> Path:
    """``$XDG_CACHE_HOME/mollify/gradient-graphs``, else ``~/.cache/mollify/gradient-graphs``."""
    base = environ.get("XDG_CACHE_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".cache")
    return Path(base) / "mollify" / "gradient-graphs"


@dataclass(frozen=True)
class Settings:
    """Every tunable of the server. Sizes in bytes, durations in seconds.

    Attributes:
        address: ``host:port`` to listen on; port 0 picks a free port. Loopback by default (in a
            pod, ``0.0.0.0:PORT``, so that probes and other pods reach it).
        http_address: ``host:port`` of the HTTP front end (KServe v1, Open Inference Protocol and
            ``/metrics``); ``None``: no HTTP.
        model_repository: folder of model folders (Mollify's layout, or Triton's
            ``name/config.pbtxt`` + ``name/<version>/model.onnx``), or one model's folder (KServe's
            ``--model_dir``: ``model.onnx`` directly inside); ``None`` serves the bundled demo models.
        model_name: the name the model of a single-model folder is served under (KServe's
            ``--model_name``); ``None``: the folder's name.
        inferred_lower: input lower bound of a model whose config is inferred from its graph.
        inferred_upper: input upper bound of a model whose config is inferred from its graph.
        cache_dir: where built gradient graphs are cached by content hash; ``None`` is
            :func:`default_cache_dir`.
        device: ``auto`` (CUDA when it really loads, else CPU), ``cpu``, ``cuda`` (GPU 0) or
            ``cuda:N`` (GPU N). With ``cuda``, ``max_concurrent_requests`` defaults to 1 (one
            computing slot per GPU) and the memory budget to the GPU's free memory.
        io_binding: ``auto`` (on for CUDA sessions), ``on`` or ``off``: run sessions through ONNX
            Runtime's I/O binding, with device buffers reused across the chunks of one shape.
        cudnn_conv_algo_search: ``EXHAUSTIVE``, ``HEURISTIC`` or ``DEFAULT`` (CUDA provider).
        gpu_mem_limit: the CUDA memory arena's limit in bytes; 0: no limit.
        allow_tf32: let CUDA use TF32 for float32 convolutions and matrix products (faster, about
            10 mantissa bits); off by default so attributions agree with the CPU to float rounding.
        providers: ONNX Runtime execution providers in priority order, e.g.
            ``("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")``;
            ``None``: chosen from ``device``. Every one must load on this host or the server refuses
            to start (no silent fallback); ``device`` then only gives the GPU index.
        intra_op_threads: ONNX Runtime threads per session; ``None``: the available cores divided by
            ``max_concurrent_requests`` (see :meth:`session_threads`), so that concurrent explanations
            do not oversubscribe the CPU.
        memory_budget_bytes: memory one explanation may use for a chunk of samples; 0 (the default)
            chooses it with :func:`default_memory_budget` from the memory the process may use and
            ``max_concurrent_requests`` (after construction it always holds the bytes).
        max_concurrent_requests: explanations computing at once (default: one per four cores, 1 to 4).
        max_queued_requests: explanations waiting for a slot; beyond, RESOURCE_EXHAUSTED at once.
        max_message_bytes: largest request or response message.
        max_evaluations: most gradient evaluations one request may plan (samples × steps × draws,
            summed over instances and ranks).
        max_input_elements: most float elements in one request's inputs tensor.
        max_instances: most instances in one request.
        max_output_graphs: gradient graphs kept per model for tensors other than the configured one.
        max_explained_inputs: gradient graphs kept per model for explained inputs requests name
            (``ExplainRequest.explained_input``) other than the configured one, least recently
            used dropped first: a client naming many tensors cannot exhaust memory.
        tls_cert: PEM certificate chain; with ``tls_key``, the server speaks TLS only.
        tls_key: PEM private key of ``tls_cert``.
        token: bearer token every call must carry (``authorization: Bearer <token>``); ``None``: no auth.
        auth_health: whether health checks need the token too (default: no, so probes work).
        reflection: serve gRPC server reflection.
        metrics_port: Prometheus metrics HTTP port; 0 turns metrics off.
        metrics_address: the host the metrics endpoint binds.
        drain_delay_s: after SIGTERM, how long health reports NOT_SERVING while calls are still
            served, before the listener closes (load balancers and Kubernetes stop routing first).
        grace_period_s: how long in-flight requests may finish once the listener has closed;
            those still running then end with UNAVAILABLE.
        allow_symlinks_outside: follow symbolic links of the model repository (a model folder,
            ``model.onnx``, ``config.json``) that resolve outside it; by default such a model is not
            loaded (links inside the repository are always followed).
        reload_min_interval_s: least time between the starts of two repository reloads; reload
            requests arriving meanwhile wait for the next one and share it.
        log_format: ``json`` (one object per line) or ``text`` (key=value).
        log_level: ``DEBUG``, ``INFO``, ``WARNING`` or ``ERROR``.
    """

    address: str = "127.0.0.1:50051"
    http_address: str | None = None
    model_repository: Path | None = None
    model_name: str | None = None
    inferred_lower: float = 0.0
    inferred_upper: float = 1.0
    cache_dir: Path | None = None
    device: str = "auto"
    io_binding: str = "auto"
    cudnn_conv_algo_search: str = "EXHAUSTIVE"
    gpu_mem_limit: int = 0
    allow_tf32: bool = False
    providers: tuple[str, ...] | None = None
    intra_op_threads: int | None = None
    memory_budget_bytes: int = 0
    max_concurrent_requests: int = dataclasses.field(default_factory=default_concurrency)
    max_queued_requests: int = 16
    max_message_bytes: int = 64 << 20
    max_evaluations: int = 500_000
    max_input_elements: int = 16_000_000
    max_instances: int = 64
    max_output_graphs: int = 4
    max_explained_inputs: int = 4
    tls_cert: Path | None = None
    tls_key: Path | None = None
    token: str | None = dataclasses.field(default=None, repr=False)
    auth_health: bool = False
    reflection: bool = True
    metrics_port: int = 0
    metrics_address: str = "127.0.0.1"
    drain_delay_s: float = 5.0
    grace_period_s: float = 30.0
    allow_symlinks_outside: bool = False
    reload_min_interval_s: float = 1.0
    log_format: str = "json"
    log_level: str = "INFO"
    # Whether memory_budget_bytes was chosen by default_memory_budget (it was 0 when constructed).
    _memory_budget_chosen: bool = dataclasses.field(default=False, init=False, repr=False, compare=False)

    _memory_budget_rule: str = dataclasses.field(
        default=_MEMORY_BUDGET_RULE, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if self.memory_budget_bytes == 0:
            gpu = cuda_index(self.device) if isinstance(self.device, str) else None
            free = gpu_free_memory_bytes(gpu) if gpu is not None else None
            if free is not None:
                budget = default_gpu_memory_budget(self.max_concurrent_requests, free, self.gpu_mem_limit)
                object.__setattr__(self, "_memory_budget_rule", _GPU_MEMORY_BUDGET_RULE)
            else:
                budget = default_memory_budget(self.max_concurrent_requests)
            object.__setattr__(self, "memory_budget_bytes", budget)
            object.__setattr__(self, "_memory_budget_chosen", True)
        _validate(self)

    @property
    def memory_budget_source(self) -> str:
        """How :attr:`memory_budget_bytes` came about, for the start-up log line."""
        return (
            self._memory_budget_rule
            if self._memory_budget_chosen
            else "set by --memory-budget-bytes / MOLLIFY_MEMORY_BUDGET_BYTES"
        )

    def runtime_options(self) -> Any:
        """The sessions' :class:`models.runtime.RuntimeOptions` (I/O binding, CUDA provider options,
        execution providers).

        Raises:
            SettingsError: a provider of ``providers`` is unknown to onnxruntime, missing from its
                build or does not load here (the message names the flag and the providers listed).
        """
        # onnxruntime: only where sessions are opened
        from models.runtime import DeviceUnavailableError, RuntimeOptions, check_providers

        if self.providers:
            try:
                check_providers(self.providers)
            except DeviceUnavailableError as err:
                raise SettingsError(f"--providers / MOLLIFY_PROVIDERS: {err}") from None
        return RuntimeOptions(
            io_binding=self.io_binding,
            cudnn_conv_algo_search=self.cudnn_conv_algo_search,
            gpu_mem_limit=self.gpu_mem_limit,
            allow_tf32=self.allow_tf32,
            providers=self.providers or (),
        )

    @property
    def host(self) -> str:
        return self.address.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    def session_threads(self) -> int:
        """ONNX Runtime intra-op threads of each session: the setting, else cores / concurrency."""
        if self.intra_op_threads is not None:
            return self.intra_op_threads
        return max(1, available_cores() // self.max_concurrent_requests)

    def resolved_cache_dir(self) -> Path:
        return self.cache_dir if self.cache_dir is not None else default_cache_dir(os.environ)

    @classmethod
    def from_sources(
        cls,
        flags: argparse.Namespace | Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """Build the settings: a flag that was given wins over ``MOLLIFY_<NAME>``, which wins over the default.

        Args:
            flags: parsed flags (``None`` values mean "not given"), e.g. from :func:`add_arguments`.
            environ: the environment; ``None`` reads ``os.environ``.

        Raises:
            SettingsError: a value does not parse or is out of range; the message names the flag
                and the variable.
        """
        environ = os.environ if environ is None else environ
        given = vars(flags) if isinstance(flags, argparse.Namespace) else dict(flags or {})
        values: dict[str, Any] = {}
        for spec in SETTINGS:
            if given.get(spec.name) is not None:
                values[spec.name] = given[spec.name]
            elif spec.env in environ:
                try:
                    values[spec.name] = spec.parse(environ[spec.env])
                except ValueError as err:
                    raise SettingsError(f"{spec.env} (or {spec.flag}): {err}") from None
        for port_flag, name in (("grpc_port", "address"), ("http_port", "http_address")):
            # KServe's --grpc_port / --http_port: every interface, as KServe's model servers bind.
            if given.get(port_flag) is not None and given.get(name) is None:
                values[name] = f"0.0.0.0:{given[port_flag]}"
        token_file = given.get("token_file") or environ.get("MOLLIFY_TOKEN_FILE")
        if token_file and values.get("token") is None:
            try:
                values["token"] = Path(token_file).read_text().strip()
            except OSError as err:
                raise SettingsError(
                    f"--token-file / MOLLIFY_TOKEN_FILE: cannot read {token_file}: {err}"
                ) from None
        if values.get("cache_dir") is None:
            values["cache_dir"] = default_cache_dir(environ)
        if (
            values.get("max_concurrent_requests") is None
            and cuda_index(str(values.get("device", ""))) is not None
        ):
            # One computing slot per GPU: ONNX Runtime already keeps the device busy with one run.
            values["max_concurrent_requests"] = 1
        return cls(**values)


@dataclass(frozen=True)
class _Spec:
    name: str
    parse: Callable[[str], Any]
    help: str
    metavar: str | None = None
    default: Callable[[], str] | None = None  # the default as the help shows it, when not the field's

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "MOLLIFY_" + self.name.upper()


SETTINGS: tuple[_Spec, ...] = (
    _Spec(
        "address",
        str,
        "host:port of the gRPC port (port 0: any free port; in a pod 0.0.0.0:PORT)",
        "HOST:PORT",
    ),
    _Spec(
        "http_address",
        _optional(str),
        "host:port of the HTTP front end: KServe v1 and Open Inference "
        "Protocol explain, health and metadata, /metrics (default: no HTTP)",
        "HOST:PORT",
    ),
    _Spec(
        "model_repository",
        Path,
        "folder with one <model>/model.onnx (+ config.json) per model, a Triton "
        "repository (<model>/config.pbtxt, <model>/<version>/model.onnx), or one model's folder "
        "(default: the bundled demo models)",
        "DIR",
    ),
    _Spec(
        "model_name",
        _optional(str),
        "name of the model of a single-model folder (default: the folder's name)",
        "NAME",
    ),
    _Spec(
        "inferred_lower",
        float,
        "input lower bound of models without config.json (config inferred from the graph)",
        "X",
    ),
    _Spec("inferred_upper", float, "input upper bound of models without config.json", "X"),
    _Spec(
        "cache_dir", Path, "gradient-graph cache folder (default: ~/.cache/mollify/gradient-graphs)", "DIR"
    ),
    _Spec(
        "device",
        str,
        "auto, cpu, cuda or cuda:N (GPU N); with cuda: one computing slot per GPU and the "
        "memory budget from the GPU's free memory by default",
    ),
    _Spec(
        "io_binding",
        str,
        "auto, on or off: ONNX Runtime I/O binding with device buffers reused across "
        "chunks (auto: on for CUDA)",
    ),
    _Spec("cudnn_conv_algo_search", str, "CUDA: EXHAUSTIVE, HEURISTIC or DEFAULT cuDNN convolution search"),
    _Spec("gpu_mem_limit", parse_size, "CUDA: memory arena limit, e.g. 40GiB; 0: no limit", "SIZE"),
    _Spec(
        "allow_tf32",
        _parse_bool,
        "CUDA: allow TF32 for float32 convolutions and matrix products (faster, "
        "about 10 mantissa bits; default: false, attributions agree with the CPU to float rounding)",
    ),
    _Spec(
        "providers",
        _provider_list,
        "ONNX Runtime execution providers in priority order, comma-separated, e.g. "
        "TensorrtExecutionProvider,CUDAExecutionProvider,CPUExecutionProvider (default: from --device: CUDA "
        "where it really loads, else CPU). One that this onnxruntime lacks or that does not load here stops the "
        "server with an error listing the available ones: there is no silent fallback. --device then only "
        "gives the GPU index",
        "NAME,NAME",
    ),
    _Spec(
        "intra_op_threads",
        _optional(int),
        "ONNX Runtime threads per session (default: cores / max concurrent)",
        "N",
    ),
    _Spec(
        "memory_budget_bytes",
        parse_size,
        f"memory one explanation may use for a chunk of samples, e.g. 2GiB; 0: {_MEMORY_BUDGET_RULE}",
        "SIZE",
        default=lambda: (
            f"0, i.e. {format_size(default_memory_budget(default_concurrency()))} on this machine"
        ),
    ),
    _Spec("max_concurrent_requests", int, "explanations computing at once", "N"),
    _Spec("max_queued_requests", int, "explanations waiting for a slot before RESOURCE_EXHAUSTED", "N"),
    _Spec("max_message_bytes", parse_size, "largest request or response message, e.g. 64MiB", "SIZE"),
    _Spec("max_evaluations", int, "most gradient evaluations one request may plan", "N"),
    _Spec("max_input_elements", int, "most input elements in one request", "N"),
    _Spec("max_instances", int, "most instances in one request", "N"),
    _Spec("max_output_graphs", int, "gradient graphs kept per model for other explained tensors", "N"),
    _Spec(
        "max_explained_inputs", int, "gradient graphs kept per model for explained inputs requests name", "N"
    ),
    _Spec("tls_cert", Path, "PEM certificate chain (with --tls-key: TLS only)", "FILE"),
    _Spec("tls_key", Path, "PEM private key of --tls-cert", "FILE"),
    _Spec("token", str, "bearer token every call must carry (prefer --token-file or MOLLIFY_TOKEN)", "TOKEN"),
    _Spec("auth_health", _parse_bool, "require the token for health checks too (default: false)"),
    _Spec("reflection", _parse_bool, "serve gRPC server reflection (default: true)"),
    _Spec("metrics_port", int, "Prometheus metrics HTTP port; 0 turns metrics off", "PORT"),
    _Spec("metrics_address", str, "host the metrics endpoint binds", "HOST"),
    _Spec(
        "drain_delay_s",
        float,
        "seconds after SIGTERM during which health reports NOT_SERVING but calls are "
        "still served, before the listener closes (so load balancers stop routing first)",
        "SECONDS",
    ),
    _Spec(
        "grace_period_s",
        float,
        "seconds in-flight requests may finish once the listener has closed; "
        "those still running then end with UNAVAILABLE",
        "SECONDS",
    ),
    _Spec(
        "allow_symlinks_outside",
        _parse_bool,
        "load models whose folder, model.onnx or config.json is a "
        "symbolic link resolving outside the model repository (default: false, such models are refused)",
    ),
    _Spec(
        "reload_min_interval_s",
        float,
        "least seconds between two model-repository reloads; reload requests "
        "arriving meanwhile wait for the next one and share it",
        "SECONDS",
    ),
    _Spec("log_format", str, "json or text"),
    _Spec("log_level", str, "DEBUG, INFO, WARNING or ERROR"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting (defaults ``None``: :meth:`Settings.from_sources` fills them in)."""
    for spec in SETTINGS:
        definition = Settings.__dataclass_fields__[spec.name]
        if spec.default is not None:
            default = spec.default()
        elif definition.default_factory is not dataclasses.MISSING:
            default = f"{definition.default_factory()} on this machine"
        else:
            default = str(definition.default)
        # A setting whose default is computed says so in its own help text.
        help_text = f"{spec.help} [env {spec.env}" + ("]" if default == "None" else f"; default {default}]")
        if spec.parse is _parse_bool:
            parser.add_argument(
                spec.flag, dest=spec.name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            parser.add_argument(
                spec.flag, dest=spec.name, type=spec.parse, default=None, metavar=spec.metavar, help=help_text
            )
    parser.add_argument(
        "--token-file",
        dest="token_file",
        type=Path,
        default=None,
        metavar="FILE",
        help="file holding the bearer token [env MOLLIFY_TOKEN_FILE]",
    )
    kserve = parser.add_argument_group(
        "KServe spellings", "the flags KServe passes to a model server or explainer container"
    )
    kserve.add_argument(
        "--model_dir",
        dest="model_repository",
        type=Path,
        default=None,
        metavar="DIR",
        help="same as --model-repository (where KServe's storage initializer puts the model)",
    )
    kserve.add_argument(
        "--model_name", dest="model_name", default=None, metavar="NAME", help="same as --model-name"
    )
    kserve.add_argument(
        "--http_port",
        dest="http_port",
        type=int,
        default=None,
        metavar="PORT",
        help="same as --http-address 0.0.0.0:PORT",
    )
    kserve.add_argument(
        "--grpc_port",
        dest="grpc_port",
        type=int,
        default=None,
        metavar="PORT",
        help="same as --address 0.0.0.0:PORT",
    )
    kserve.add_argument(
        "--predictor_host",
        dest="predictor_host",
        default=None,
        metavar="HOST",
        help="accepted and ignored: Mollify runs the model itself",
    )


_DEVICES = ("auto", "cpu", "cuda", "cuda:N")
_IO_BINDINGS = ("auto", "on", "off")
_CONV_ALGO_SEARCHES = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")
_LOG_FORMATS = ("json", "text")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _validate(settings: Settings) -> None:  # noqa: C901, PLR0912, PLR0915 - one flat check per setting
    def fail(name: str, expected: str) -> None:
        spec = next(s for s in SETTINGS if s.name == name)
        raise SettingsError(f"{spec.flag} / {spec.env} must be {expected}, got {getattr(settings, name)!r}")

    for name in ("address", "http_address"):
        value = getattr(settings, name)
        if value is None:
            continue
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            fail(name, "host:port with a port in 0..65535")
    if not settings.inferred_lower < settings.inferred_upper:
        fail("inferred_lower", f"below --inferred-upper ({settings.inferred_upper})")
    if settings.model_name is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", settings.model_name):
        fail("model_name", "a model name matching [A-Za-z0-9_.-]+")
    if settings.device not in ("auto", "cpu") and cuda_index(settings.device) is None:
        fail("device", f"one of {list(_DEVICES)} (N: the GPU index, 0 first)")
    if settings.providers is not None:
        providers = list(settings.providers)
        if not providers or not all(isinstance(name, str) and name.strip() for name in providers):
            fail("providers", "comma-separated execution provider names")
        if len(set(providers)) != len(providers):
            fail("providers", "names that each appear once")
        if settings.device == "cpu" and providers != ["CPUExecutionProvider"]:
            fail("providers", "CPUExecutionProvider alone with --device cpu (or drop --device)")
        if cuda_index(settings.device) is not None and "CUDAExecutionProvider" not in providers:
            fail("providers", f"a list with CUDAExecutionProvider with --device {settings.device}")
    if settings.io_binding not in _IO_BINDINGS:
        fail("io_binding", f"one of {list(_IO_BINDINGS)}")
    if settings.cudnn_conv_algo_search not in _CONV_ALGO_SEARCHES:
        fail("cudnn_conv_algo_search", f"one of {list(_CONV_ALGO_SEARCHES)}")
    if settings.gpu_mem_limit < 0:
        fail("gpu_mem_limit", "a byte count, at least 0 (0: no limit)")
    if settings.intra_op_threads is not None and settings.intra_op_threads < 1:
        fail("intra_op_threads", "at least 1 (or unset)")
    for name in (
        "memory_budget_bytes",
        "max_concurrent_requests",
        "max_message_bytes",
        "max_evaluations",
        "max_input_elements",
        "max_instances",
        "max_output_graphs",
        "max_explained_inputs",
    ):
        if getattr(settings, name) < 1:
            fail(name, "at least 1")
    if settings.max_queued_requests < 0:
        fail("max_queued_requests", "at least 0")
    if not 0 <= settings.metrics_port <= 65535:
        fail("metrics_port", "a port in 0..65535")
    for name in ("drain_delay_s", "grace_period_s", "reload_min_interval_s"):
        if not 0 <= getattr(settings, name) < float("inf"):
            fail(name, "a number of seconds, at least 0")
    if settings.log_format not in _LOG_FORMATS:
        fail("log_format", f"one of {list(_LOG_FORMATS)}")
    if settings.log_level.upper() not in _LOG_LEVELS:
        fail("log_level", f"one of {list(_LOG_LEVELS)}")
    if (settings.tls_cert is None) != (settings.tls_key is None):
        fail("tls_cert", "given together with --tls-key / MOLLIFY_TLS_KEY")
    for name in ("tls_cert", "tls_key"):
        path = getattr(settings, name)
        if path is not None and not Path(path).is_file():
            fail(name, "an existing file")
    if settings.model_repository is not None and not Path(settings.model_repository).is_dir():
        fail("model_repository", "an existing folder")
    if settings.token is not None and not settings.token.strip():
        fail("token", "a non-empty string")
