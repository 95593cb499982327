"""The one atomic write of a local file: write a temporary file beside it, then ``os.replace``.

Readers see the old file, the new one, or nothing; never a half-written one. A failed write
leaves no temporary file behind. Pure standard library and no geoxai imports, so every
sub-package (``train``, ``models``, ``xai``, ``io``) can use it; object storage builds on it in
:func:`geoxai.io.store.put_atomic` (one PUT on S3, this function locally).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text"]


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[Path], object], *, parents: bool = False
) -> Path:
    """Make ``path`` by calling ``write(tmp)`` on a hidden temporary file, then ``os.replace``.

    Args:
        path: the file to make (replaced whole if it exists).
        write: writes the complete content to the path it is given (``torch.save``,
            ``shutil.copyfile`` ...); its return value is ignored.
        parents: create the parent directories first.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OSError: whatever ``write`` or the rename raise (the temporary file is removed).
    """
    dst = Path(path)
    if parents:
        dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, parents: bool = False) -> Path:
    """:func:`atomic_write` of ``data``."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), parents=parents)


def atomic_write_text(
    path: str | os.PathLike[str], text: str, *, parents: bool = False, encoding: str = "utf-8"
) -> Path:
    """:func:`atomic_write` of ``text`` (UTF-8 unless ``encoding`` says otherwise)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding=encoding), parents=parents)
