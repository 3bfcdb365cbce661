"""Terminal output: CODE: message and exit codes, the progress bar, JSON safety, tables."""

from __future__ import annotations

import argparse
import io
import json

import numpy as np
import pytest

from service.cli.output import (
    EXIT_INTERNAL,
    EXIT_SERVER,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    BadInputError,
    ProgressBar,
    dumps,
    format_table,
    guarded,
    server_error,
)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_draws_only_on_a_terminal() -> None:
    pipe = io.StringIO()
    quiet = ProgressBar("x", pipe)
    quiet.update(5, 10, 0.1, force=True)
    quiet.close()
    assert pipe.getvalue() == ""
    terminal = _Terminal()
    bar = ProgressBar("explaining", terminal, width=10)
    bar.update(5, 10, 0.0312, force=True)
    bar.update(6, 10, 0.03, force=False)  # within the redraw interval: skipped
    bar.close()
    text = terminal.getvalue()
    assert "explaining [#####-----] 5/10 samples, rel. error   3.12%" in text
    assert "6/10" not in text and text.endswith("\n")


def test_server_codes_map_to_exit_codes() -> None:
    assert server_error("UNAVAILABLE", "down").exit_code == EXIT_UNREACHABLE
    assert server_error("NOT_FOUND", "no model").exit_code == EXIT_SERVER
    assert BadInputError("x").exit_code == EXIT_USAGE


def _run_guarded(error: BaseException | None, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    @guarded
    def run(args: argparse.Namespace) -> int:
        if error is not None:
            raise error
        return 0

    code = run(argparse.Namespace())
    return code, capsys.readouterr().err


def test_guarded_prints_code_and_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run_guarded(None, capsys) == (0, "")
    assert _run_guarded(BadInputError("input 'x.png' does not exist"), capsys) == (
        EXIT_USAGE,
        "BAD_INPUT: input 'x.png' does not exist\n",
    )
    code, err = _run_guarded(server_error("NOT_FOUND", "no model named 'cat'"), capsys)
    assert (code, err) == (EXIT_SERVER, "NOT_FOUND: no model named 'cat'\n")
    code, err = _run_guarded(RuntimeError("boom"), capsys)
    assert code == EXIT_INTERNAL and err.splitlines()[-1] == "INTERNAL: RuntimeError: boom"


def test_json_is_strict() -> None:
    text = dumps({"a": np.float32(1.5), "b": np.arange(3), "c": float("nan"), "d": (1, np.int64(2))})
    assert json.loads(text) == {"a": 1.5, "b": [0, 1, 2], "c": None, "d": [1, 2]}
    assert "NaN" not in text


def test_table_alignment() -> None:
    table = format_table(["name", "n"], [["a", 1], ["long", 100]], "lr")
    assert table.splitlines() == ["name    n", "----  ---", "a       1", "long  100"]
