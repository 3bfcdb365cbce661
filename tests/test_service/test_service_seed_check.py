"""One seed rule, in the estimator's words, for the estimator, the server and the client."""

from __future__ import annotations

import numpy as np
import pytest

from estimator import InvalidArgumentError, check_seed, explain
from estimator.testing import LinearModel
from service.client import ExplainerClient, MollifyError


@pytest.mark.parametrize(
    ("seed", "words"), [(2**64, "in [0, 2**64); got"), (-1, ">= 0; got -1"), (1.5, "an integer")]
)
def test_the_client_refuses_a_seed_as_the_estimator_does(seed: object, words: str) -> None:
    with pytest.raises(InvalidArgumentError, match="^seed: expected") as domain:
        check_seed(seed)
    with pytest.raises(MollifyError) as client:
        ExplainerClient._explain_request("m", np.zeros((1, 2), np.float32), None, 0, seed, None, None)  # type: ignore[arg-type]
    assert client.value.code == "INVALID_ARGUMENT"
    assert client.value.message == str(domain.value)
    assert words in client.value.message


def test_the_largest_seed_travels() -> None:
    request = ExplainerClient._explain_request(
        "m", np.zeros((1, 2), np.float32), None, 0, 2**64 - 1, None, None
    )
    assert request.seed == 2**64 - 1
    model = LinearModel(np.eye(2))
    assert explain(model, np.zeros(2), lower=-1.0, upper=1.0, seed=2**64 - 1).seed == 2**64 - 1
