"""The one atomic write: the file appears whole, a failed write leaves nothing behind."""

from __future__ import annotations

import pytest

from geoxai.atomic import atomic_write, atomic_write_bytes, atomic_write_text


def test_atomic_write_replaces_whole_and_cleans_up(tmp_path):
    p = tmp_path / "a" / "doc.json"
    atomic_write_text(p, "one", parents=True)
    atomic_write_bytes(p, b"two")
    assert p.read_bytes() == b"two"

    def broken(tmp):
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(p, broken)
    assert p.read_bytes() == b"two"
    assert sorted(x.name for x in p.parent.iterdir()) == ["doc.json"]
