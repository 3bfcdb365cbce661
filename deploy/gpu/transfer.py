"""Carry large files (the ``onnxruntime-gpu`` wheel) to a machine that takes at most 64 MiB per command.

    python deploy/gpu/transfer.py split WHEEL... [--out .gpu-transfer] [--piece-mib 56]
    python deploy/gpu/transfer.py plan [--out .gpu-transfer]
    python deploy/gpu/transfer.py join [--out .gpu-transfer] [--into .gpu-transfer/wheels-joined]

``split`` cuts each file into pieces of at most ``--piece-mib`` MiB under ``OUT/pieces/`` and
writes ``OUT/manifest.json`` (each file's name, size and SHA-256, and each piece's name, size and
SHA-256). ``plan`` prints one line per device command: the piece it carries (the manifest goes with
the first). ``join`` checks every piece against the manifest, reassembles each file into ``--into``
and checks the whole file's SHA-256; it names every missing or damaged piece and exits 1 if any.
``OUT`` is git-ignored, so the pieces stay on a warm machine between commands.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

MANIFEST = "manifest.json"
PIECES = "pieces"
_BLOCK = 1 << 20


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def split(files: list[Path], out: Path, piece_bytes: int) -> dict[str, object]:
    """Cut ``files`` into pieces of at most ``piece_bytes`` bytes under ``out/pieces``; returns the manifest."""
    if piece_bytes < 1:
        raise ValueError(f"piece size must be at least 1 byte, got {piece_bytes}")
    (out / PIECES).mkdir(parents=True, exist_ok=True)
    entries = []
    for path in files:
        pieces = []
        with path.open("rb") as handle:
            index = 0
            while chunk := handle.read(piece_bytes):
                name = f"{path.name}.part{index:03d}"
                (out / PIECES / name).write_bytes(chunk)
                pieces.append({"name": name, "size": len(chunk), "sha256": hashlib.sha256(chunk).hexdigest()})
                index += 1
        entries.append(
            {"name": path.name, "size": path.stat().st_size, "sha256": _sha256(path), "pieces": pieces}
        )
    manifest: dict[str, object] = {"piece_bytes": piece_bytes, "files": entries}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def plan(out: Path) -> list[str]:
    """The paths (relative to the repository root) each device command carries, one command per entry."""
    manifest = json.loads((out / MANIFEST).read_text())
    names = [piece["name"] for entry in manifest["files"] for piece in entry["pieces"]]
    steps = [f"{out / PIECES / name}" for name in names]
    if steps:
        steps[0] = f"{out / MANIFEST} {steps[0]}"
    return steps


def join(out: Path, into: Path) -> list[str]:
    """Check and reassemble every file of the manifest into ``into``; returns the problems (empty: all good)."""
    manifest = json.loads((out / MANIFEST).read_text())
    problems: list[str] = []
    into.mkdir(parents=True, exist_ok=True)
    for entry in manifest["files"]:
        bad = []
        for piece in entry["pieces"]:
            path = out / PIECES / piece["name"]
            if not path.is_file():
                bad.append(f"{piece['name']}: missing")
            elif path.stat().st_size != piece["size"] or _sha256(path) != piece["sha256"]:
                bad.append(f"{piece['name']}: damaged (size or SHA-256 differs from the manifest)")
        if bad:
            problems += bad
            continue
        target = into / entry["name"]
        with target.open("wb") as handle:
            for piece in entry["pieces"]:
                handle.write((out / PIECES / piece["name"]).read_bytes())
        if _sha256(target) != entry["sha256"]:
            problems.append(f"{entry['name']}: the joined file's SHA-256 differs from the manifest")
            target.unlink()
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    cut = commands.add_parser("split", help="cut files into pieces and write the manifest")
    cut.add_argument("files", nargs="+", type=Path)
    cut.add_argument("--piece-mib", type=int, default=56, help="largest piece in MiB (default 56)")
    for command in (
        cut,
        commands.add_parser("plan", help="print the paths each device command carries"),
        commands.add_parser("join", help="check the pieces and reassemble the files"),
    ):
        command.add_argument("--out", type=Path, default=Path(".gpu-transfer"))
        if command.prog.endswith("join"):
            command.add_argument("--into", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.command == "split":
        manifest = split(args.files, args.out, args.piece_mib << 20)
        for entry in manifest["files"]:  # type: ignore[attr-defined]
            print(
                f"{entry['name']}: {entry['size']} bytes in {len(entry['pieces'])} pieces, sha256 {entry['sha256']}"
            )
        return 0
    if args.command == "plan":
        for number, step in enumerate(plan(args.out), 1):
            print(f"command {number}: carry {step}")
        return 0
    problems = join(args.out, args.into or args.out / "wheels-joined")
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"joined and verified into {args.into or args.out / 'wheels-joined'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
