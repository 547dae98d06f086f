"""What this process has open, by path (Linux: /proc/self/fd)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CAN_LIST", "open_files_below"]

CAN_LIST = os.path.isdir("/proc/self/fd")
"""Whether this system says which files a process has open (Linux)."""


def open_files_below(folder: str | Path) -> list[str]:
    """The paths this process has open below ``folder`` (empty where it cannot tell).

    A removed file's path ends with " (deleted)".
    """
    if not CAN_LIST:
        return []
    names = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            names.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # closed meanwhile
            continue
    prefix = f"{os.fspath(folder).rstrip(os.sep)}{os.sep}"
    return [name for name in names if name.startswith(prefix)]
