"""The bundled text classifier ``review_sentiment``: reproducible build, tokenizer, held-out accuracy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.config import MODEL_FILE_NAME, TOKENIZER_FILE_NAME, ModelConfig
from models.demo import TEXT_DEMO_MODELS, repository_path
from models.demo.text_data import NEGATIVE_WORDS, POSITIVE_WORDS, generate_reviews, review_data

torch = pytest.importorskip("torch")
tokenizers = pytest.importorskip("tokenizers")

FOLDER = repository_path() / "review_sentiment"


def test_shipped_text_model_is_byte_identical_to_a_rebuild(tmp_path: Path) -> None:
    from models.demo.text_build import build_text

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        folder, accuracy = build_text(tmp_path, seed=0)
    finally:
        torch.set_num_threads(threads)
    print(f"review_sentiment rebuilt: held-out accuracy {accuracy:.4f}")
    assert accuracy >= 0.95
    for name in (MODEL_FILE_NAME, TOKENIZER_FILE_NAME, "config.json"):
        assert (folder / name).read_bytes() == (FOLDER / name).read_bytes(), name
    assert (FOLDER / MODEL_FILE_NAME).stat().st_size < 200_000


def test_generated_reviews_follow_their_rules() -> None:
    texts, labels = generate_reviews(300, seed=1)
    assert (texts, labels.tolist()) == (lambda t, y: (t, y.tolist()))(*generate_reviews(300, seed=1))
    for text, label in zip(texts, labels, strict=True):
        clause = text.split(" but ")[-1].split(" and ")[0]
        words = clause.split()
        positive = any(w in POSITIVE_WORDS for w in words)
        assert positive != any(w in NEGATIVE_WORDS for w in words)
        assert int(positive != ("not" in words)) == label, text
    assert 0.4 < labels.mean() < 0.6


def test_shipped_model_is_accurate_on_held_out_reviews() -> None:
    import onnxruntime as ort

    config = ModelConfig.load(FOLDER)
    assert "review_sentiment" in TEXT_DEMO_MODELS
    assert config.explained_input and config.baseline_token_id == 0
    tokenizer = tokenizers.Tokenizer.from_file(str(FOLDER / TOKENIZER_FILE_NAME))
    assert tokenizer.token_to_id("[PAD]") == config.baseline_token_id
    data = review_data()
    encodings = tokenizer.encode_batch(data.test_texts)
    ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
    mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
    assert ids.shape == (len(data.test_texts), *config.input_shape)
    # The tokenizer splits words and punctuation, and knows every generated word.
    assert encodings[0].tokens[: len(data.test_texts[0].split())] == data.test_texts[0].split()
    assert tokenizer.token_to_id("[UNK]") not in set(ids.ravel().tolist())
    session = ort.InferenceSession(str(FOLDER / MODEL_FILE_NAME), providers=["CPUExecutionProvider"])
    logits = session.run(["probabilities"], {"input_ids": ids, "attention_mask": mask})[0]
    accuracy = float(np.mean(logits.argmax(axis=1) == data.test_labels))
    print(f"review_sentiment held-out accuracy {accuracy:.4f} on {len(ids)} generated reviews")
    assert accuracy >= 0.95
    # Changing one word flips the prediction as the templates say.
    probe = tokenizer.encode_batch(
        ["the movie was good", "the movie was not good", "the movie was good but the cast was weak"]
    )
    probe_logits = session.run(
        ["probabilities"],
        {
            "input_ids": np.asarray([e.ids for e in probe], np.int64),
            "attention_mask": np.asarray([e.attention_mask for e in probe], np.int64),
        },
    )[0]
    assert probe_logits.argmax(axis=1).tolist() == [1, 0, 0]
