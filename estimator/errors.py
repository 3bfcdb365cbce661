"""The estimator's exception tree. Transport-free: the service maps these to status codes."""

from __future__ import annotations


class EstimatorError(Exception):
    """Base of every error the estimator raises on purpose."""


class InvalidArgumentError(EstimatorError, ValueError):
    """A caller-supplied value is wrong; the message names the field, the expected and the actual value."""


class LimitExceededError(EstimatorError):
    """The request asks for more work or memory than a configured limit allows."""


class CancelledError(EstimatorError):
    """``should_stop()`` returned true between two chunks; the partial work is discarded."""


class ModelEvaluationError(EstimatorError):
    """The gradient function failed or returned arrays of the wrong shape or non-finite values."""


class NonFiniteNoisyGradientsError(ModelEvaluationError):
    """The model is finite at the clean input but returned non-finite values at noisy samples: the
    noise moved inputs where the model overflows. A property of the request (kernel, scale), not a
    model failure; the message names the kernel, the share of bad samples and the remedy."""
