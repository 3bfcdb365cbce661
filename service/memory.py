"""How much memory this process may use (the tightest cgroup limit on it, else the physical
memory), and byte counts in words.

Read once at start-up by :mod:`service.settings` to choose the default memory budget. Linux
cgroup v2 (``memory.max``) and v1 (``memory.limit_in_bytes``) are both read, along the process's
own cgroup path up to the mount root, so a limit set on a parent (a Kubernetes pod around its
containers) counts too. Imports only the standard library.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["available_memory_bytes", "cgroup_memory_limit", "format_size", "physical_memory_bytes"]

# cgroup v1 reports "no limit" as a huge page-aligned number (2**63 rounded down to a page).
_UNLIMITED_V1 = 1 << 60


def format_size(size: int) -> str:
    """``1073741824`` → ``"1.0 GiB"``: bytes in the largest binary unit that keeps the number ≥ 1."""
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def physical_memory_bytes() -> int | None:
    """The machine's physical memory in bytes; ``None`` where the platform does not say."""
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return pages * page_size if pages > 0 and page_size > 0 else None


def _read_limit(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text.isdigit():
        return None  # "max" (cgroup v2: no limit) or unreadable
    value = int(text)
    return value if 0 < value < _UNLIMITED_V1 else None


def _limits_up_to(mount: Path, cgroup_path: str, file_name: str) -> list[int]:
    """Limits in ``file_name`` from the process's cgroup folder up to ``mount`` (the folders that exist)."""
    folder = mount / cgroup_path.strip("/") if cgroup_path.strip("/") else mount
    limits: list[int] = []
    while True:
        limit = _read_limit(folder / file_name)
        if limit is not None:
            limits.append(limit)
        if folder == mount or mount not in folder.parents:
            break
        folder = folder.parent
    return limits


def cgroup_memory_limit(
    proc_cgroup: Path = Path("/proc/self/cgroup"), cgroup_root: Path = Path("/sys/fs/cgroup")
) -> int | None:
    """The tightest cgroup memory limit on this process in bytes; ``None`` when there is none.

    Args:
        proc_cgroup: the process's cgroup membership (``/proc/self/cgroup``: ``0::/path`` for v2,
            ``N:memory:/path`` for v1).
        cgroup_root: where the cgroup hierarchies are mounted (v2 there or under ``unified/``,
            v1 under ``memory/``).
    """
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    limits: list[int] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            for mount in (cgroup_root, cgroup_root / "unified"):
                limits += _limits_up_to(mount, path, "memory.max")
        elif "memory" in controllers.split(","):
            limits += _limits_up_to(cgroup_root / "memory", path, "memory.limit_in_bytes")
    return min(limits) if limits else None


def available_memory_bytes() -> int | None:
    """Memory this process may use: the smaller of its cgroup limit and the physical memory."""
    known = [m for m in (cgroup_memory_limit(), physical_memory_bytes()) if m is not None]
    return min(known) if known else None
