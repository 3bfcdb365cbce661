"""Breaking changes between two versions of a .proto file, compared as compiled descriptors.

A change is breaking when a client or server built from the older file can no longer talk to one
built from the newer file, or when code generated from the older file no longer compiles against the
newer one. Reported, by fully qualified name:

- a message, enum, service or RPC removed;
- a field removed (unless its number is reserved), renumbered, renamed, retyped (scalar type or
  message/enum type), its label changed (singular vs repeated), moved into or out of a ``oneof``, or
  its explicit presence (proto3 ``optional``) dropped;
- an enum value removed (unless its number is reserved), renumbered or renamed;
- an RPC's request or response type or its streaming changed;
- the package or a file option naming generated code (``go_package``, ``java_package``, ...) changed.

Adding messages, fields, enum values, RPCs, or ``optional`` to a singular proto3 field (same number,
same type, same wire format) is not breaking.

``compile_proto`` runs grpcio-tools' protoc. The last release's descriptor is written with
``python -m tests.test_protos.proto_breaking --write-release`` from the repository root at release time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from google.protobuf import descriptor_pb2 as d

ROOT = Path(__file__).resolve().parents[2]
PROTO = "protos/mollify/v1/explainer.proto"
RELEASE = ROOT / "protos/mollify/v1/explainer.release.binpb"

_Field = d.FieldDescriptorProto


def compile_proto(proto: str = PROTO, root: Path = ROOT) -> d.FileDescriptorProto:
    """The descriptor of ``proto`` (a path relative to ``root``, also the include path)."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "set.binpb"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                "-I",
                str(root),
                f"--descriptor_set_out={out}",
                str(root / proto),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return read_descriptor(out)


def read_descriptor(path: Path) -> d.FileDescriptorProto:
    """The single file of the serialized ``FileDescriptorSet`` at ``path``."""
    files = d.FileDescriptorSet.FromString(path.read_bytes()).file
    if len(files) != 1:
        raise ValueError(f"{path}: expected one file in the descriptor set, found {len(files)}")
    return files[0]


def write_descriptor(file: d.FileDescriptorProto, path: Path) -> None:
    path.write_bytes(d.FileDescriptorSet(file=[file]).SerializeToString(deterministic=True))


def breaking_changes(old: d.FileDescriptorProto, new: d.FileDescriptorProto) -> list[str]:
    """Every breaking change from ``old`` to ``new``, one sentence each; empty when compatible."""
    problems: list[str] = []
    if old.package != new.package:
        problems.append(f"package {old.package!r} became {new.package!r}")
    problems += _file_options(old, new)
    new_messages = dict(_messages(new.message_type, new.package))
    for name, message in _messages(old.message_type, old.package):
        if name not in new_messages:
            problems.append(f"message {name} removed")
        else:
            problems += _message(name, message, new_messages[name])
    new_enums = dict(_enums(new))
    for name, enum in _enums(old):
        if name not in new_enums:
            problems.append(f"enum {name} removed")
        else:
            problems += _enum(name, enum, new_enums[name])
    new_services = {s.name: s for s in new.service}
    for service in old.service:
        name = f"{old.package}.{service.name}"
        if service.name not in new_services:
            problems.append(f"service {name} removed")
        else:
            problems += _service(name, service, new_services[service.name])
    return problems


def _file_options(old: d.FileDescriptorProto, new: d.FileDescriptorProto) -> list[str]:
    before = {f.name: value for f, value in old.options.ListFields()}
    after = {f.name: value for f, value in new.options.ListFields()}
    return [
        f"file option {key} {before[key]!r} became {after.get(key)!r}"
        for key in sorted(before)
        if before[key] != after.get(key)
    ]


def _messages(messages: Iterable[d.DescriptorProto], scope: str) -> Iterable[tuple[str, d.DescriptorProto]]:
    for message in messages:
        name = f"{scope}.{message.name}"
        yield name, message
        yield from _messages(message.nested_type, name)


def _enums(file: d.FileDescriptorProto) -> Iterable[tuple[str, d.EnumDescriptorProto]]:
    for enum in file.enum_type:
        yield f"{file.package}.{enum.name}", enum
    for scope, message in _messages(file.message_type, file.package):
        for enum in message.enum_type:
            yield f"{scope}.{enum.name}", enum


def _reserved(
    ranges: Iterable[d.DescriptorProto.ReservedRange | d.EnumDescriptorProto.EnumReservedRange],
    number: int,
    *,
    end_inclusive: bool,
) -> bool:
    return any(r.start <= number < r.end + end_inclusive for r in ranges)


def _oneof(message: d.DescriptorProto, field: _Field) -> str:
    """The field's real ``oneof`` ('' when none; proto3 ``optional``'s synthetic one does not count)."""
    if not field.HasField("oneof_index") or field.proto3_optional:
        return ""
    return message.oneof_decl[field.oneof_index].name


def _message(name: str, old: d.DescriptorProto, new: d.DescriptorProto) -> list[str]:
    problems: list[str] = []
    by_number = {f.number: f for f in new.field}
    by_name = {f.name: f for f in new.field}
    for before in old.field:
        field = f"{name}.{before.name}"
        moved = by_name.get(before.name)
        if moved is not None and moved.number != before.number:
            problems.append(f"field {field} renumbered {before.number} -> {moved.number}")
            continue
        after = by_number.get(before.number)
        if after is None:
            if not _reserved(new.reserved_range, before.number, end_inclusive=False):
                problems.append(f"field {field} = {before.number} removed without reserving its number")
            continue
        if after.name != before.name:
            problems.append(f"field {field} = {before.number} renamed to {after.name}")
        if (after.type, after.type_name) != (before.type, before.type_name):
            problems.append(f"field {field} = {before.number} changed type {_type(before)} -> {_type(after)}")
        if after.label != before.label:
            problems.append(
                f"field {field} = {before.number} changed label "
                f"{_Field.Label.Name(before.label)} -> {_Field.Label.Name(after.label)}"
            )
        if _oneof(old, before) != _oneof(new, after):
            problems.append(
                f"field {field} = {before.number} moved from oneof {_oneof(old, before)!r} "
                f"to {_oneof(new, after)!r}"
            )
        if before.proto3_optional and not after.proto3_optional:
            problems.append(f"field {field} = {before.number} lost its explicit presence (optional)")
    return problems


def _type(field: _Field) -> str:
    return field.type_name.lstrip(".") if field.type_name else _Field.Type.Name(field.type)


def _enum(name: str, old: d.EnumDescriptorProto, new: d.EnumDescriptorProto) -> list[str]:
    problems: list[str] = []
    by_number = {v.number: v for v in new.value}
    by_name = {v.name: v for v in new.value}
    for before in old.value:
        value = f"{name}.{before.name}"
        moved = by_name.get(before.name)
        if moved is not None and moved.number != before.number:
            problems.append(f"enum value {value} renumbered {before.number} -> {moved.number}")
            continue
        after = by_number.get(before.number)
        if after is None:
            if not _reserved(new.reserved_range, before.number, end_inclusive=True):
                problems.append(f"enum value {value} = {before.number} removed without reserving its number")
        elif after.name != before.name:
            problems.append(f"enum value {value} = {before.number} renamed to {after.name}")
    return problems


def _service(name: str, old: d.ServiceDescriptorProto, new: d.ServiceDescriptorProto) -> list[str]:
    problems: list[str] = []
    methods = {m.name: m for m in new.method}
    for before in old.method:
        rpc = f"{name}.{before.name}"
        after = methods.get(before.name)
        if after is None:
            problems.append(f"rpc {rpc} removed")
            continue
        for what in ("input_type", "output_type", "client_streaming", "server_streaming"):
            if getattr(before, what) != getattr(after, what):
                problems.append(
                    f"rpc {rpc} changed {what} {getattr(before, what)!r} -> {getattr(after, what)!r}"
                )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--write-release",
        action="store_true",
        help=f"record the current {PROTO} as the last release's descriptor ({RELEASE.name})",
    )
    args = parser.parse_args(argv)
    current = compile_proto()
    if args.write_release:
        write_descriptor(current, RELEASE)
        print(f"wrote {RELEASE.relative_to(ROOT)}")
        return 0
    problems = breaking_changes(read_descriptor(RELEASE), current)
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
