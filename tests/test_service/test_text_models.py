"""Text models over gRPC: GetModel carries the tokenizer; ExplainerClient.explain_text uses it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from estimator.method import ClassTarget, Method
from models.demo import repository_path
from service.client import ExplainerClient, MollifyError
from service.server import create_server
from service.settings import Settings

tokenizers = pytest.importorskip("tokenizers")

MODEL = "review_sentiment"


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("text-repository")
    for name in (MODEL, "digits_cnn"):
        shutil.copytree(repository_path() / name, root / name)
    # The same model with a broken tokenizer, and one whose tokenizer links outside the repository.
    shutil.copytree(repository_path() / MODEL, root / "broken_tokenizer")
    (root / "broken_tokenizer" / "tokenizer.json").write_text('{"version": "1.0"}')
    shutil.copytree(repository_path() / MODEL, root / "linked_tokenizer")
    outside = tmp_path_factory.mktemp("outside") / "tokenizer.json"
    shutil.copy(repository_path() / MODEL / "tokenizer.json", outside)
    (root / "linked_tokenizer" / "tokenizer.json").unlink()
    (root / "linked_tokenizer" / "tokenizer.json").symlink_to(outside)
    return root


@pytest.fixture(scope="module")
def client(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExplainerClient]:
    settings = Settings(
        address="127.0.0.1:0",
        model_repository=repository,
        cache_dir=tmp_path_factory.mktemp("cache"),
        log_level="WARNING",
        metrics_port=0,
    )
    server, port = create_server(settings)
    server.start()
    with ExplainerClient(f"127.0.0.1:{port}", timeout=120) as connected:
        yield connected
    server.stop(grace=0.5).wait(10)


def test_get_model_carries_the_tokenizer_file(client: ExplainerClient) -> None:
    info = client.get_model(MODEL)
    assert info.ready, info.error
    assert info.tokenizer == (repository_path() / MODEL / "tokenizer.json").read_text()
    assert client.get_model("digits_cnn").tokenizer == ""
    assert [t.name for t in info.request_inputs] == ["input_ids", "attention_mask"]


def test_unusable_tokenizers_leave_the_model_not_ready(client: ExplainerClient) -> None:
    broken = client.get_model("broken_tokenizer")
    assert (
        not broken.ready
        and "tokenizer.json of 'broken_tokenizer' is not a Hugging Face tokenizers" in broken.error
    )
    linked = client.get_model("linked_tokenizer")
    assert not linked.ready and "linked_tokenizer/tokenizer.json is a symbolic link" in linked.error
    assert linked.tokenizer == ""


def test_explain_text_equals_explaining_ids_and_mask(client: ExplainerClient) -> None:
    texts = ["the movie was not good but the acting was great", "the cast was dull"]
    method = Method(base="integrated_gradients", mode="none")
    explained = client.explain_text(MODEL, texts, method=method, target=ClassTarget(1), seed=3)
    tokenizer = tokenizers.Tokenizer.from_file(str(repository_path() / MODEL / "tokenizer.json"))
    encodings = tokenizer.encode_batch(texts)
    ids = np.asarray([e.ids for e in encodings], np.int64)
    mask = np.asarray([e.attention_mask for e in encodings], np.int64)
    direct = client.explain(
        MODEL, ids, extra_inputs={"attention_mask": mask}, method=method, target=ClassTarget(1), seed=3
    )
    for text, result, reference, encoding in zip(texts, explained, direct, encodings, strict=True):
        n = int(np.sum(encoding.attention_mask))
        assert result.text == text and result.tokens == encoding.tokens[:n] == text.split()
        np.testing.assert_array_equal(result.attribution, reference.attribution[:n])
        np.testing.assert_array_equal(result.standard_error, reference.standard_error[:n])
    assert explained[0].explanation.outputs[1] > explained[0].explanation.outputs[0]


def test_explain_text_needs_a_tokenizer(client: ExplainerClient) -> None:
    with pytest.raises(MollifyError) as raised:
        client.explain_text("digits_cnn", ["hello"])
    assert raised.value.code == "INVALID_ARGUMENT" and "has no tokenizer" in raised.value.message
    with pytest.raises(MollifyError, match="has no tokens"):
        client.explain_text(MODEL, ["   "])
