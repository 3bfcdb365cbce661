"""scikit-learn MLPClassifier → skl2onnx → gradient graph, against a torch reimplementation.

The explained tensor is the ``probabilities`` output (zipmap off); the int64 ``label`` branch
(ArgMax, ArrayFeatureExtractor, Cast) is off the float path and must be pruned, not differentiated.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

from models.gradient_graph import build_gradient_model
from models.runtime import GradientSession

FEATURES = 6
_ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh, "logistic": torch.sigmoid}


def _fit(activation: str, classes: int) -> MLPClassifier:
    x, y = make_classification(
        n_samples=200, n_features=FEATURES, n_informative=4, n_classes=classes, random_state=classes
    )
    classifier = MLPClassifier(
        hidden_layer_sizes=(16, 8), activation=activation, max_iter=300, random_state=0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return classifier.fit(x, y)


def _torch_probabilities(classifier: MLPClassifier, x: torch.Tensor) -> torch.Tensor:
    """sklearn's forward pass (``MLPClassifier._forward_pass_fast``) written in torch, float32."""
    hidden = x
    layers = list(zip(classifier.coefs_, classifier.intercepts_, strict=True))
    for index, (weight, bias) in enumerate(layers):
        hidden = hidden @ torch.from_numpy(weight.astype(np.float32)) + torch.from_numpy(
            bias.astype(np.float32)
        )
        if index < len(layers) - 1:
            hidden = _ACTIVATIONS[classifier.activation](hidden)
    if classifier.out_activation_ == "logistic":
        positive = torch.sigmoid(hidden)
        return torch.cat([1.0 - positive, positive], dim=1)
    return torch.softmax(hidden, dim=1)


@pytest.mark.parametrize("classes", [2, 3], ids=["binary", "multiclass"])
@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic"])
def test_probability_gradient_matches_torch(activation: str, classes: int) -> None:
    classifier = _fit(activation, classes)
    model = convert_sklearn(
        classifier,
        initial_types=[("input", FloatTensorType([None, FEATURES]))],
        options={id(classifier): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    model.ir_version = min(model.ir_version, 10)
    session = GradientSession(build_gradient_model(model, explained="probabilities"), device="cpu")
    assert session.input_shape == (FEATURES,) and session.output_shape == (classes,)

    rng = np.random.default_rng(7)
    x = rng.normal(size=(24, FEATURES)).astype(np.float32)
    cotangents = rng.normal(size=(24, classes)).astype(np.float32)
    result = session(x, cotangents)

    inputs = torch.from_numpy(x).requires_grad_(True)
    probabilities = _torch_probabilities(classifier, inputs)
    (expected,) = torch.autograd.grad(probabilities, inputs, grad_outputs=torch.from_numpy(cotangents))
    np.testing.assert_allclose(result.outputs, probabilities.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.outputs, classifier.predict_proba(x.astype(np.float64)), atol=1e-5)

    scale = np.abs(expected.numpy()).max(axis=1, keepdims=True)
    errors = (np.abs(result.gradients - expected.numpy()) / scale).max(axis=1)
    if activation == "relu":
        assert np.median(errors) <= 1e-5, errors
        assert np.mean(errors <= 1e-4) >= 0.9, errors
    else:
        assert errors.max() <= 1e-5, errors
