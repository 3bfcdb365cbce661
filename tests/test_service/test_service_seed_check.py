"""One seed rule, in the estimator's words, for the estimator, the server, the client, the HTTP
codec and every command's ``--seed`` (each naming its own field or flag)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from estimator import InvalidArgumentError, check_seed, explain
from estimator.testing import LinearModel
from service import http_codec
from service.batch.seeds import row_seed
from service.cli import main
from service.cli.batch_command import _seed as batch_seed
from service.cli.explain_command import seed_from_args
from service.client import ExplainerClient, MollifyError
from service.status import failure_for


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


@pytest.mark.parametrize(
    ("seed", "words"),
    [
        (2**64, "expected an integer in [0, 2**64); got 18446744073709551616"),
        (-1, "expected an integer >= 0; got -1"),
    ],
)
@pytest.mark.parametrize("command", ["explain", "compare", "batch", "demo"])
def test_every_command_refuses_a_seed_in_the_estimators_words_naming_the_flag(
    command: str, seed: int, words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The seed is checked before any file is read or any server is reached.
    argv = {
        "explain": ["explain", "--model", "m", str(tmp_path / "x.npy"), "--server", "127.0.0.1:1"],
        "compare": ["compare", "--model", "m", str(tmp_path / "x.npy"), "--server", "127.0.0.1:1"],
        "batch": ["batch", str(tmp_path / "rows.csv"), "--model", "m", "--out", str(tmp_path / "out")],
        "demo": ["demo", "--server", "127.0.0.1:1"],
    }[command]
    code = main([*argv, "--seed", str(seed)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.strip() == f"USAGE: --seed: {words}"
    with pytest.raises(InvalidArgumentError) as domain:
        check_seed(seed, "--seed")
    assert err.strip() == f"USAGE: {domain.value}"


def test_the_commands_take_every_seed_the_server_takes(tmp_path: Path) -> None:
    largest = 2**64 - 1
    assert seed_from_args(argparse.Namespace(seed=largest)) == largest
    assert seed_from_args(argparse.Namespace(seed=None)) is None
    assert batch_seed(argparse.Namespace(seed=largest, out=tmp_path / "out")) == largest
    # A batch job's rows still get 63-bit seeds (its int64 seed column) from any job seed.
    assert 0 <= row_seed(largest, 7) < 2**63


@pytest.mark.parametrize(
    ("seed", "words"),
    [
        (2**64, "an integer in [0, 2**64); got 18446744073709551616"),
        (-3, "an integer >= 0; got -3"),
        (True, "an integer; got True"),
        (2.0, "an integer; got 2.0"),
    ],
)
def test_the_http_codec_refuses_a_seed_in_the_estimators_words(seed: object, words: str) -> None:
    document = {"instances": [[0.0, 0.0]], "parameters": {"seed": seed}}
    with pytest.raises(InvalidArgumentError) as refused:
        http_codec.v1_query("m", document)
    assert str(refused.value) == f"parameters.seed: expected {words}"
    failure = failure_for(refused.value, "r")
    assert (failure.http_status, failure.code.name) == (400, "INVALID_ARGUMENT")
    assert http_codec.v1_query("m", {**document, "parameters": {"seed": 2**64 - 1}}).seed == 2**64 - 1
