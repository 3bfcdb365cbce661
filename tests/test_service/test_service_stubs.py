"""The committed Python stubs are what grpcio-tools generates from the committed .proto, and the
.proto compiles for other languages with protoc's built-in generators."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROTO = "protos/mollify/v1/explainer.proto"
STUBS = ("explainer_pb2.py", "explainer_pb2.pyi", "explainer_pb2_grpc.py")

# Version stamps that change with the grpcio-tools / protobuf release, not with the contract.
_STAMPS = (
    re.compile(r"^# Protobuf Python Version: .*$", re.M),
    re.compile(r"_runtime_version\.ValidateProtobufRuntimeVersion\([^)]*\)", re.S),
    re.compile(r"^GRPC_GENERATED_VERSION = .*$", re.M),
)


def _normalised(text: str) -> str:
    for stamp in _STAMPS:
        text = stamp.sub("<version stamp>", text)
    return text


def _protoc(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", ".", *args, PROTO],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )


def test_committed_python_stubs_are_fresh(tmp_path: Path) -> None:
    _protoc(f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}")
    for name in STUBS:
        committed = (ROOT / "protos/mollify/v1" / name).read_text()
        generated = (tmp_path / "protos/mollify/v1" / name).read_text()
        assert _normalised(committed) == _normalised(generated), (
            f"protos/mollify/v1/{name} is stale: regenerate with "
            f"python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. {PROTO}"
        )


@pytest.mark.parametrize("language", ["cpp", "java", "csharp", "objc", "php", "ruby"])
def test_proto_compiles_for_other_languages(tmp_path: Path, language: str) -> None:
    # grpcio-tools' bundled protoc has only the Python generators; a system protoc has the rest.
    protoc = shutil.which("protoc")
    if protoc is None:
        pytest.skip("no protoc on PATH (apt install protobuf-compiler)")
    subprocess.run(
        [protoc, "-I", ".", f"--{language}_out={tmp_path}", PROTO],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    assert any(p.is_file() for p in tmp_path.rglob("*")), f"protoc wrote nothing for {language}"


def test_proto_hygiene() -> None:
    text = (ROOT / PROTO).read_text()
    assert "package mollify.v1;" in text
    assert 'option go_package = "' in text and 'option java_package = "' in text
    for enum in re.findall(r"enum (\w+) \{([^}]*)\}", text):
        first = re.search(r"(\w+) = 0;", enum[1])
        assert first is not None and first.group(1).endswith("_UNSPECIFIED"), f"enum {enum[0]}: zero value"
    for rpc, request, response in re.findall(r"rpc (\w+)\((\w+)\) returns \((?:stream )?(\w+)\)", text):
        assert (request, response) == (f"{rpc}Request", f"{rpc}Response"), f"rpc {rpc} has no own pair"
