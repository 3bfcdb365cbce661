"""mollify.v1 stays wire compatible with the last release, and the checker catches each kind of break.

The last release is 0.1.0 (``CHANGELOG.md``), commit ed15688; its compiled descriptor is
``protos/mollify/v1/explainer.release.binpb``. The checker is exercised on in-memory copies of that
descriptor with one deliberate change each.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2 as d

from tests.test_protos.proto_breaking import (
    PROTO,
    RELEASE,
    ROOT,
    breaking_changes,
    compile_proto,
    read_descriptor,
)

RELEASE_COMMIT = "ed15688aa0120051ab8d9ef20b6f9ab9a988381f"  # 0.1.0

Mutation = Callable[[d.FileDescriptorProto], None]


def _release() -> d.FileDescriptorProto:
    return read_descriptor(RELEASE)


def _message(file: d.FileDescriptorProto, name: str) -> d.DescriptorProto:
    [message] = [m for m in file.message_type if m.name == name]
    return message


def _field(file: d.FileDescriptorProto, message: str, name: str) -> d.FieldDescriptorProto:
    [field] = [f for f in _message(file, message).field if f.name == name]
    return field


def _enum(file: d.FileDescriptorProto, name: str) -> d.EnumDescriptorProto:
    [enum] = [e for e in file.enum_type if e.name == name]
    return enum


def _rpc(file: d.FileDescriptorProto, name: str) -> d.MethodDescriptorProto:
    [method] = [m for m in file.service[0].method if m.name == name]
    return method


def _remove(items: object, name: str) -> None:
    [index] = [i for i, item in enumerate(items) if item.name == name]  # type: ignore[attr-defined]
    del items[index]  # type: ignore[attr-defined]


def test_the_current_proto_is_compatible_with_the_last_release() -> None:
    problems = breaking_changes(_release(), compile_proto())
    assert problems == [], (
        "protos/mollify/v1/explainer.proto breaks mollify.v1 clients of the last release:\n"
        + "\n".join(problems)
        + "\nAdd fields instead of changing them; reserve the numbers and names of removed ones."
    )


def test_the_stored_release_descriptor_is_the_release_commits_proto(tmp_path: Path) -> None:
    git = shutil.which("git")
    if (
        git is None
        or subprocess.run(
            [git, "cat-file", "-e", f"{RELEASE_COMMIT}^{{commit}}"], cwd=ROOT, capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("the release commit is not in this checkout (no git, or a shallow clone)")
    source = subprocess.run(
        [git, "show", f"{RELEASE_COMMIT}:{PROTO}"], cwd=ROOT, capture_output=True, check=True
    )
    (tmp_path / PROTO).parent.mkdir(parents=True)
    (tmp_path / PROTO).write_bytes(source.stdout)
    at_release = compile_proto(PROTO, tmp_path)
    # Compatible both ways: not a field, value, message or RPC more or less than the release had.
    assert breaking_changes(_release(), at_release) == []
    assert breaking_changes(at_release, _release()) == []
    assert at_release.message_type == _release().message_type and at_release.service == _release().service


def _renumber_field(f: d.FileDescriptorProto) -> None:
    _field(f, "ExplainRequest", "seed").number = 99


def _remove_reserved_field(f: d.FileDescriptorProto) -> None:
    request = _message(f, "ExplainRequest")
    _remove(request.field, "model_name")
    request.reserved_range.add(start=1, end=2)
    request.reserved_name.append("model_name")


def _remove_reserved_enum_value(f: d.FileDescriptorProto) -> None:
    enum = _enum(f, "Transform")
    _remove(enum.value, "TRANSFORM_ABS")
    enum.reserved_range.add(start=2, end=2)


def _add_everything(f: d.FileDescriptorProto) -> None:
    _message(f, "ExplainRequest").field.add(
        name="new_field",
        number=500,
        type=d.FieldDescriptorProto.TYPE_STRING,
        label=d.FieldDescriptorProto.LABEL_OPTIONAL,
        json_name="newField",
    )
    _enum(f, "Transform").value.add(name="TRANSFORM_NEW", number=100)
    f.message_type.add(name="NewMessage")
    f.enum_type.add(name="NewEnum").value.add(name="NEW_ENUM_UNSPECIFIED", number=0)
    f.service[0].method.add(
        name="NewRpc", input_type=".mollify.v1.NewMessage", output_type=".mollify.v1.NewMessage"
    )


def _make_optional(f: d.FileDescriptorProto) -> None:
    """Singular proto3 field to ``optional`` (what 0.2 did to InstanceExplanation.relative_error)."""
    message = _message(f, "ExplainRequest")
    field = _field(f, "ExplainRequest", "model_name")
    field.proto3_optional = True
    field.oneof_index = len(message.oneof_decl)
    message.oneof_decl.add(name="_model_name")


@pytest.mark.parametrize(
    "mutate",
    [_remove_reserved_field, _remove_reserved_enum_value, _add_everything, _make_optional],
    ids=[
        "field removed, number reserved",
        "enum value removed, number reserved",
        "additions",
        "singular field made optional",
    ],
)
def test_compatible_changes_pass(mutate: Mutation) -> None:
    new = _release()
    mutate(new)
    assert breaking_changes(_release(), new) == []


def _set(path: Callable[[d.FileDescriptorProto], object], attribute: str, value: object) -> Mutation:
    return lambda f: setattr(path(f), attribute, value)


BREAKING: list[tuple[str, Mutation, str]] = [
    (
        "field removed",
        lambda f: _remove(_message(f, "ExplainRequest").field, "model_name"),
        "field mollify.v1.ExplainRequest.model_name = 1 removed without reserving its number",
    ),
    ("field renumbered", _renumber_field, "field mollify.v1.ExplainRequest.seed renumbered 5 -> 99"),
    (
        "field renamed",
        _set(lambda f: _field(f, "ExplainRequest", "model_name"), "name", "model"),
        "field mollify.v1.ExplainRequest.model_name = 1 renamed to model",
    ),
    (
        "scalar retyped",
        _set(lambda f: _field(f, "ExplainRequest", "seed"), "type", d.FieldDescriptorProto.TYPE_INT32),
        "field mollify.v1.ExplainRequest.seed = 5 changed type TYPE_UINT64 -> TYPE_INT32",
    ),
    (
        "message type changed",
        _set(lambda f: _field(f, "ExplainRequest", "inputs"), "type_name", ".mollify.v1.Method"),
        "field mollify.v1.ExplainRequest.inputs = 2 changed type mollify.v1.Tensor -> mollify.v1.Method",
    ),
    (
        "singular to repeated",
        _set(
            lambda f: _field(f, "ExplainRequest", "model_name"),
            "label",
            d.FieldDescriptorProto.LABEL_REPEATED,
        ),
        "field mollify.v1.ExplainRequest.model_name = 1 changed label LABEL_OPTIONAL -> LABEL_REPEATED",
    ),
    (
        "out of a oneof",
        lambda f: _field(f, "Target", "top_k").ClearField("oneof_index"),
        "field mollify.v1.Target.top_k = 4 moved from oneof 'selection' to ''",
    ),
    (
        "presence dropped",
        lambda f: (
            _field(f, "ExplainRequest", "seed").ClearField("proto3_optional"),
            _field(f, "ExplainRequest", "seed").ClearField("oneof_index"),
        ),
        "field mollify.v1.ExplainRequest.seed = 5 lost its explicit presence (optional)",
    ),
    (
        "enum value removed",
        lambda f: _remove(_enum(f, "Transform").value, "TRANSFORM_ABS"),
        "enum value mollify.v1.Transform.TRANSFORM_ABS = 2 removed without reserving its number",
    ),
    (
        "enum value renumbered",
        _set(lambda f: _enum(f, "Transform").value[2], "number", 7),
        "enum value mollify.v1.Transform.TRANSFORM_ABS renumbered 2 -> 7",
    ),
    (
        "enum value renamed",
        _set(lambda f: _enum(f, "Transform").value[2], "name", "TRANSFORM_ABSOLUTE"),
        "enum value mollify.v1.Transform.TRANSFORM_ABS = 2 renamed to TRANSFORM_ABSOLUTE",
    ),
    (
        "message removed",
        lambda f: _remove(f.message_type, "Preprocessing"),
        "message mollify.v1.Preprocessing removed",
    ),
    ("enum removed", lambda f: _remove(f.enum_type, "Baseline"), "enum mollify.v1.Baseline removed"),
    (
        "rpc removed",
        lambda f: _remove(f.service[0].method, "GetModel"),
        "rpc mollify.v1.ExplainerService.GetModel removed",
    ),
    (
        "rpc streaming changed",
        _set(lambda f: _rpc(f, "ExplainStream"), "server_streaming", False),
        "rpc mollify.v1.ExplainerService.ExplainStream changed server_streaming True -> False",
    ),
    (
        "rpc request changed",
        _set(lambda f: _rpc(f, "GetModel"), "input_type", ".mollify.v1.ListModelsRequest"),
        "rpc mollify.v1.ExplainerService.GetModel changed input_type '.mollify.v1.GetModelRequest' -> "
        "'.mollify.v1.ListModelsRequest'",
    ),
    ("service removed", lambda f: f.ClearField("service"), "service mollify.v1.ExplainerService removed"),
    (
        "package renamed",
        _set(lambda f: f, "package", "mollify.v2"),
        "package 'mollify.v1' became 'mollify.v2'",
    ),
    (
        "go_package changed",
        _set(lambda f: f.options, "go_package", "example.com/other"),
        "file option go_package 'github.com/mollify/mollify/gen/go/mollify/v1;mollifyv1' became 'example.com/other'",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "expected"), [(m, e) for _, m, e in BREAKING], ids=[i for i, _, _ in BREAKING]
)
def test_each_kind_of_break_is_reported(mutate: Mutation, expected: str) -> None:
    new = _release()
    mutate(new)
    assert expected in breaking_changes(_release(), new)
