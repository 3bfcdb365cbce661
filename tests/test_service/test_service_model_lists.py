"""Model lists stay small with text models: ListModels and ReloadModels leave tokenizer texts out
(``has_tokenizer`` says which models have one) and GetModel carries them, so a repository of text
models lists within gRPC's default 4 MiB message limit of clients in any language."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest

from models.demo import repository_path
from protos.mollify.v1 import explainer_pb2 as pb
from protos.mollify.v1 import explainer_pb2_grpc as pb_grpc
from service.client import ExplainerClient
from service.server import MollifyServer
from service.settings import Settings

TEXT_MODEL = "review_sentiment"
COPIES = 3
EXTRA_WORDS = 90_000  # about 2 MiB of vocabulary per tokenizer.json


def _large_tokenizer(source: Path) -> str:
    """The bundled tokenizer with words appended at ids past the model's table (never produced by
    the test's text): a real, loadable tokenizers file of about 2 MiB."""
    data = json.loads(source.read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]
    first = max(vocab.values()) + 1
    vocab.update({f"filler{i:06d}": first + i for i in range(EXTRA_WORDS)})
    return json.dumps(data)


@pytest.fixture(scope="module")
def server(
    demo_settings: Settings, helpers: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MollifyServer]:
    root = tmp_path_factory.mktemp("text-lists")
    source = repository_path() / TEXT_MODEL
    tokenizer = _large_tokenizer(source / "tokenizer.json")
    for copy in range(COPIES):
        folder = root / f"{TEXT_MODEL}_{copy}"
        shutil.copytree(source, folder)
        (folder / "tokenizer.json").write_text(tokenizer, encoding="utf-8")
    shutil.copytree(repository_path() / "digits_cnn", root / "digits_cnn")
    started = helpers.start_server(dataclasses.replace(demo_settings, model_repository=root))
    yield started
    started.stop(0).wait(10)


@pytest.fixture(scope="module")
def stub(server: MollifyServer) -> Iterator[pb_grpc.ExplainerServiceStub]:
    # Default channel options: a 4 MiB receive limit, as gRPC clients in other languages have.
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield pb_grpc.ExplainerServiceStub(channel)


def test_model_lists_leave_tokenizers_out_and_say_which_models_have_one(
    server: MollifyServer, stub: pb_grpc.ExplainerServiceStub
) -> None:
    tokenizer_bytes = (server.repository.entry(f"{TEXT_MODEL}_0").folder / "tokenizer.json").stat().st_size
    assert COPIES * tokenizer_bytes > 4 << 20  # listed in full, they would not fit one message
    for response in (stub.ListModels(pb.ListModelsRequest()), stub.ReloadModels(pb.ReloadModelsRequest())):
        listed = {info.name: info for info in response.models}
        assert sorted(listed) == ["digits_cnn", *(f"{TEXT_MODEL}_{c}" for c in range(COPIES))]
        assert all(info.ready for info in listed.values())
        assert all(info.tokenizer == "" for info in listed.values())
        assert [name for name, info in listed.items() if info.has_tokenizer] == [
            f"{TEXT_MODEL}_{c}" for c in range(COPIES)
        ]


def test_get_model_carries_the_tokenizer_and_text_still_explains(server: MollifyServer) -> None:
    folder = server.repository.entry(f"{TEXT_MODEL}_1").folder
    with ExplainerClient(f"127.0.0.1:{server.port}", timeout=60) as client:
        info = client.get_model(f"{TEXT_MODEL}_1")
        assert info.has_tokenizer
        assert info.tokenizer == (folder / "tokenizer.json").read_text(encoding="utf-8")
        assert not client.get_model("digits_cnn").has_tokenizer
        [result] = client.explain_text(f"{TEXT_MODEL}_1", ["the movie was great"], seed=3)
    assert result.tokens[:4] == ["the", "movie", "was", "great"]
    assert result.attribution.shape == (len(result.tokens),)
