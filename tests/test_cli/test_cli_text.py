"""``mollify explain --text`` and ``mollify compare --text`` against a real server on loopback,
with the bundled ``review_sentiment`` model and the tokenizer the server sends in GetModel."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from estimator import explain
from estimator.method import ClassTarget, Method
from models.config import MODEL_FILE_NAME, ModelConfig
from models.demo import repository_path
from service.cli import main
from service.cli.render import HeatmapStyle
from service.cli.render_text import colour_tokens, plain_tokens, token_colours
from service.cli.text_inputs import use_colour

tokenizers = pytest.importorskip("tokenizers")

MODEL = "review_sentiment"
TEXT = "the movie was not good but the acting was great"
FOLDER = repository_path() / MODEL


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _tokens(text: str) -> list[str]:
    encoding = tokenizers.Tokenizer.from_file(str(FOLDER / "tokenizer.json")).encode(text)
    return [t for t, m in zip(encoding.tokens, encoding.attention_mask, strict=True) if m]


def _png_has_content(path: Path) -> None:
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int64)
    assert pixels.shape[0] > 50 and pixels.shape[1] > 200
    # Coloured token boxes: far more than black text on white.
    saturated = np.abs(pixels[..., 0] - pixels[..., 2]) > 60
    assert saturated.mean() > 0.01


def test_explain_text_writes_per_token_files(
    server_address: str, out_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = [TEXT, "honestly the story was really dull !"]
    code, out, err = _run(
        capsys,
        "explain",
        "-m",
        MODEL,
        "--text",
        *texts,
        "--samples",
        "8",
        "--seed",
        "5",
        "--server",
        server_address,
        "--out",
        str(out_dir),
        "--json",
    )
    assert code == 0, err
    document = json.loads(out)
    assert [e["name"] for e in document["explanations"]] == ["text1", "text2"]
    for text, summary, label in zip(texts, document["explanations"], ("positive", "negative"), strict=True):
        assert summary["text"] == text
        assert summary["tokens"] == _tokens(text)
        assert summary["prediction"]["label"] == label
        n = len(summary["tokens"])
        attribution = np.load(summary["files"]["attribution"])
        error = np.load(summary["files"]["standard_error"])
        assert attribution.shape == error.shape == (n,)
        np.testing.assert_allclose(attribution, summary["attribution"], rtol=1e-6)
        np.testing.assert_allclose(error, summary["standard_error"], rtol=1e-6)
        assert np.all(error > 0) and np.any(attribution != 0)
        assert json.loads(Path(summary["files"]["summary"]).read_text())["tokens"] == summary["tokens"]
        _png_has_content(Path(summary["files"]["tokens_figure"]))


def test_explain_text_prints_values_off_a_terminal(
    server_address: str, out_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(
        capsys,
        "explain",
        "-m",
        MODEL,
        "--text",
        TEXT,
        "--samples",
        "4",
        "--seed",
        "1",
        "--server",
        server_address,
        "--out",
        str(out_dir),
        "--no-figures",
    )
    assert code == 0, err
    assert "\x1b[" not in out
    assert "predicted positive" in out
    assert "not(" in out and "great(" in out and "±" in out
    assert not (out_dir / "text1.tokens.png").exists()


def test_attribution_per_token_matches_a_direct_estimator_call(
    server_address: str, out_dir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from service.instance_models import open_instance_session

    code, out, err = _run(
        capsys,
        "explain",
        "-m",
        MODEL,
        "--text",
        TEXT,
        "--samples",
        "16",
        "--seed",
        "11",
        "--method",
        "smoothgrad",
        "--target",
        "1",
        "--server",
        server_address,
        "--out",
        str(out_dir),
        "--json",
        "--no-figures",
    )
    assert code == 0, err
    [summary] = json.loads(out)["explanations"]
    config = ModelConfig.load(FOLDER)
    session = open_instance_session(
        FOLDER / MODEL_FILE_NAME,
        onnx.load(FOLDER / MODEL_FILE_NAME),
        config,
        tmp_path / "cache",
        device="cpu",
    )
    encoding = tokenizers.Tokenizer.from_file(str(FOLDER / "tokenizer.json")).encode(TEXT)
    ids = np.asarray(encoding.ids, dtype=np.int64)
    mask = np.asarray(encoding.attention_mask, dtype=np.int64)
    extras = {"attention_mask": mask}
    direct = explain(
        session.bind(ids, extras),
        session.explained_value(ids, extras),
        Method(samples=16, channel_axis=-1, channel_reduction="sum"),
        ClassTarget(1),
        lower=session.lower,
        upper=session.upper,
        seed=11,
    )
    n = len(summary["tokens"])
    assert direct.attribution.shape == (16,) and np.all(mask[:n] == 1) and np.all(mask[n:] == 0)
    np.testing.assert_allclose(summary["attribution"], direct.attribution[:n], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(summary["standard_error"], direct.standard_error[:n], rtol=1e-4, atol=1e-6)


def test_compare_on_text_draws_methods_by_tokens(
    server_address: str, out_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(
        capsys,
        "compare",
        "-m",
        MODEL,
        "--text",
        TEXT,
        "--methods",
        "grad,smoothgrad,adaptgrad:ig",
        "--samples",
        "4",
        "--seed",
        "2",
        "--server",
        server_address,
        "--out",
        str(out_dir),
        "--json",
    )
    assert code == 0, err
    document = json.loads(out)
    tokens = _tokens(TEXT)
    assert document["tokens"] == tokens
    keys = [m["key"] for m in document["methods"]]
    assert len(keys) == 3
    with np.load(document["files"]["attributions"]) as arrays:
        assert sorted(arrays.files) == sorted(keys)
        for method in document["methods"]:
            np.testing.assert_allclose(arrays[method["key"]], method["attribution"], rtol=1e-6)
            assert arrays[method["key"]].shape == (len(tokens),)
    _png_has_content(Path(document["files"]["figure"]))


def test_text_needs_a_model_with_a_tokenizer(
    server_address: str, out_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(
        capsys,
        "explain",
        "-m",
        "digits_cnn",
        "--text",
        "hello",
        "--server",
        server_address,
        "--out",
        str(out_dir),
    )
    assert code == 2
    assert "'digits_cnn' has no tokenizer" in err and "tokenizer.json" in err


def test_text_and_files_together_are_a_usage_error(
    capsys: pytest.CaptureFixture[str], dead_address: str
) -> None:
    code, _, err = _run(capsys, "explain", "-m", MODEL, "x.npy", "--text", TEXT, "--server", dead_address)
    assert code == 2 and "not both" in err
    code, _, err = _run(capsys, "compare", "-m", MODEL, "--server", dead_address)
    assert code == 2 and "--text" in err


def test_terminal_colours_are_diverging_and_centred() -> None:
    style = HeatmapStyle(clip_percentile=100.0)
    line = colour_tokens(["bad", "the", "good"], np.array([-2.0, 0.0, 2.0]), style)
    parts = line.split("\x1b[0m")[:-1]
    assert len(parts) == 3 and [p.rstrip().rsplit(" ", 1)[-1] for p in parts] == ["bad", "the", "good"]
    backgrounds = [tuple(int(v) for v in p.split("\x1b[48;2;")[1].split("m")[0].split(";")) for p in parts]
    negative, zero, positive = backgrounds
    assert negative[2] > negative[0] + 50  # blue
    assert positive[0] > positive[2] + 50  # red
    assert min(zero) > 230  # the centre of RdBu_r is (near) white
    # Dark backgrounds get white text, light ones black.
    assert "\x1b[38;2;255;255;255m" in parts[0] and "\x1b[38;2;0;0;0m" in parts[1]
    # Symmetric limits: ±v map to mirror colours of the diverging map.
    colours = token_colours(np.array([-1.0, 1.0]), style)
    assert colours[0][2] > colours[0][0] and colours[1][0] > colours[1][2]
    with pytest.raises(ValueError, match="expected 2 tokens"):
        colour_tokens(["a"], np.array([1.0, 2.0]))


def test_plain_tokens_and_when_to_colour(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (
        plain_tokens(["a", "b"], np.array([0.5, -0.25]), np.array([0.01, 0.02]))
        == "a(+0.5±0.01) b(-0.25±0.02)"
    )
    assert plain_tokens(["a"], np.array([1.0])) == "a(+1)"

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_colour(Terminal()) and not use_colour(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_colour(Terminal())
