"""Atomic file writes: a reader (or a killed process) never sees a half-written file.

Every result, record, checkpoint and dataset file in rtinst is written to a temporary file
in the destination's directory and then moved into place with ``os.replace``, which is
atomic on POSIX filesystems.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator


def file_sha256(path: str | os.PathLike) -> str | None:
    """Hex sha256 of a file's bytes, None when there is no such file."""
    p = Path(path)
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it onto ``path``.

    Use it for writers that want a file name (``torch.save``, ``fig.savefig``, PIL).
    On error the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600 files; give the result the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def remove_stale_tmp(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that killed writers of :func:`atomic_path` left: those of the
    file ``path``, or every one under ``path`` when it is a folder. Returns what was removed."""
    path = Path(path)
    found = path.rglob("*.tmp") if path.is_dir() else path.parent.glob(f".{path.name}.*.tmp")
    removed = []
    for p in found:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[IO], Any], mode: str = "w") -> None:
    """Call ``write(f)`` on a temporary file, then move it onto ``path``."""
    with atomic_path(path) as tmp:
        with open(tmp, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` onto ``path`` atomically. Through a file object: given a path, torch.save
    names the archive's inner folder after it (here the random temporary name), so the same
    object would give different bytes on every write."""
    import torch  # here: most users of this module need no torch

    atomic_write(path, lambda f: torch.save(obj, f), mode="wb")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    atomic_write(path, lambda f: json.dump(obj, f, indent=indent, sort_keys=False))
