"""Monte Carlo gradient mollification: pure numerics (numpy, scipy), no transport, no runtime.

The public API: :func:`explain` (SmoothGrad, AdaptGrad, NoiseGrad, FusionGrad and every kernel of
docs/method.md over any :class:`GradientModel`), the kernels and scale policies it is built from, and the
evaluation metrics of docs/method.md §13.
"""

from __future__ import annotations

from typing import Any

# The vocabulary (numpy only): what a client-only install needs.
from ._checks import check_seed
from .errors import (
    CancelledError,
    EstimatorError,
    InvalidArgumentError,
    LimitExceededError,
    ModelEvaluationError,
    NonFiniteNoisyGradientsError,
)
from .gradient_model import GradientBatch, GradientModel
from .method import (
    ClassTarget,
    CotangentTarget,
    DetectionTarget,
    Explanation,
    Method,
    PredictedClassTarget,
    Progress,
    RegionTarget,
    Target,
)

_MISSING: ImportError | None = None
try:  # the numerics (numpy and scipy)
    from .describe import describe
    from .explain import DEFAULT_MEMORY_BUDGET_BYTES, explain
    from .kernels import KERNEL_NAMES, Kernel, get_kernel
    from .metrics import (
        complexity,
        consistency,
        convergence,
        deletion_auc,
        insertion_auc,
        sparseness,
        spearman,
    )
    from .paths import integration_rule
    from .plan import planned_evaluations
    from .scales import adaptive_scale, fixed_scale, inherent_noise
except ImportError as missing:  # a client-only install without scipy
    if missing.name is None or missing.name.split(".")[0] != "scipy":
        raise
    _MISSING = missing

__all__ = [
    "DEFAULT_MEMORY_BUDGET_BYTES",
    "KERNEL_NAMES",
    "CancelledError",
    "ClassTarget",
    "CotangentTarget",
    "DetectionTarget",
    "EstimatorError",
    "Explanation",
    "GradientBatch",
    "GradientModel",
    "InvalidArgumentError",
    "Kernel",
    "LimitExceededError",
    "Method",
    "ModelEvaluationError",
    "NonFiniteNoisyGradientsError",
    "PredictedClassTarget",
    "Progress",
    "RegionTarget",
    "Target",
    "adaptive_scale",
    "check_seed",
    "complexity",
    "consistency",
    "convergence",
    "deletion_auc",
    "describe",
    "explain",
    "fixed_scale",
    "get_kernel",
    "inherent_noise",
    "insertion_auc",
    "integration_rule",
    "planned_evaluations",
    "sparseness",
    "spearman",
]


def __getattr__(name: str) -> Any:
    if _MISSING is not None and name in __all__:
        raise ImportError(
            f"estimator.{name} needs scipy, which this client-only install lacks: pip install scipy "
            "(or the whole package: pip install mollify)"
        ) from _MISSING
    raise AttributeError(f"module 'estimator' has no attribute {name!r}")
