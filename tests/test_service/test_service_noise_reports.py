"""What an explanation says about its own noise: zero-scale share, and an undefined standard error.

AdaptGrad gives features on a bound of the input domain no noise; the response reports that share
so that a mostly-degenerate result can be recognised (and the CLI warns). A single Monte Carlo draw
has no standard error: the response leaves it unset with a note, never NaN on the wire.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from estimator.method import Method
from protos.mollify.v1 import explainer_pb2 as pb
from service.client import ExplainerClient
from service.codec import array_to_tensor, method_to_proto


def _digit_on_the_lower_bound(share_on_bound: int) -> np.ndarray:
    """An 8×8 digit-model input with ``share_on_bound`` of 64 pixels at 0 (the lower bound), others inside."""
    x = np.full((1, 8, 8), 0.5, dtype=np.float32)
    x.reshape(-1)[:share_on_bound] = 0.0
    return x


@pytest.mark.parametrize("on_bound", [0, 16, 48, 64])
def test_adaptgrad_reports_the_share_of_features_with_zero_noise_scale(
    client: ExplainerClient, on_bound: int
) -> None:
    x = _digit_on_the_lower_bound(on_bound)
    [adapt] = client.explain("digits_cnn", x[None], method=Method(scale="adaptive", samples=4), seed=1)
    assert adapt.zero_scale_fraction == on_bound / 64
    [smooth] = client.explain("digits_cnn", x[None], method=Method(samples=4), seed=1)
    assert smooth.zero_scale_fraction == 0.0
    [vanilla] = client.explain("digits_cnn", x[None], method=Method(mode="none"), seed=1)
    assert vanilla.zero_scale_fraction == 0.0


def test_a_single_draw_has_no_standard_error_on_the_wire(client: ExplainerClient) -> None:
    x = _digit_on_the_lower_bound(16)
    request = pb.ExplainRequest(
        model_name="digits_cnn",
        inputs=array_to_tensor(x[None]),
        method=method_to_proto(Method(samples=1)),
        seed=3,
    )
    response = client._stub.Explain(request, timeout=60)
    [message] = response.explanations
    assert not message.HasField("standard_error") and not message.HasField("relative_error")
    assert "undefined" in message.standard_error_note and "2 or more" in message.standard_error_note
    # The Python client turns the absence into NaN arrays and says why.
    [result] = client.explain("digits_cnn", x[None], method=Method(samples=1), seed=3)
    assert result.standard_error.shape == result.attribution.shape
    assert np.all(np.isnan(result.standard_error)) and math.isnan(result.relative_error)
    assert not result.standard_error_defined and result.standard_error_note == message.standard_error_note
    # Two draws: a standard error again, no note.
    [two] = client.explain("digits_cnn", x[None], method=Method(samples=2), seed=3)
    assert two.standard_error_defined and two.standard_error_note == "" and np.isfinite(two.relative_error)
