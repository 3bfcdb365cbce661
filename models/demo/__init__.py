"""The bundled demo models and sample inputs.

``repository_path()`` is a model repository: one folder per model, each holding ``model.onnx``
(a plain forward model; the service builds the gradient graph at load) and ``config.json``
(:class:`models.config.ModelConfig`). Folders without ``model.onnx`` (``samples``) are not models.
Rebuild everything with ``python -m models.demo.build`` (needs the ``torch`` extra).

Models:
    ``digits_cnn``: a small CNN on scikit-learn's 8×8 digits, input ``(1, 8, 8)`` in [0, 1],
        explained tensor ``logits`` (pre-Softmax), output ``probabilities``.
    ``breast_cancer_mlp``: an MLP on the standardized Wisconsin breast-cancer features, input ``(30,)``,
        explained tensor ``logits``, output ``probabilities``.
    ``review_sentiment`` (:data:`TEXT_DEMO_MODELS`): a one-block transformer on generated movie-review
        sentences (:mod:`models.demo.text_data`), int64 ``input_ids`` and ``attention_mask``
        ``(16,)``, explained at its token-embedding output; its tokenizer is ``tokenizer.json``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEMO_MODELS", "TEXT_DEMO_MODELS", "repository_path", "sample_path"]

# The models with one float input (images, tabular rows); the text models take token ids.
DEMO_MODELS: tuple[str, ...] = ("digits_cnn", "breast_cancer_mlp")
TEXT_DEMO_MODELS: tuple[str, ...] = ("review_sentiment",)

_HERE = Path(__file__).resolve().parent


def repository_path() -> Path:
    """The folder holding the demo model folders (``<name>/model.onnx`` + ``<name>/config.json``)."""
    return _HERE


def sample_path(name: str) -> Path:
    """The path of a bundled sample input, e.g. ``"digit_3.png"`` or ``"breast_cancer_rows.csv"``.

    Raises:
        FileNotFoundError: no sample of that name is bundled; the message lists the ones that are.
    """
    samples = _HERE / "samples"
    path = samples / name
    if Path(name).name != name or not path.is_file():
        available = sorted(p.name for p in samples.glob("*") if p.is_file())
        raise FileNotFoundError(f"no demo sample named {name!r}; available: {available}")
    return path
