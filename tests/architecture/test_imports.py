"""The layout's import rules hold on the real tree, and the checker catches each kind of break."""

from __future__ import annotations

from pathlib import Path

from tests.architecture.rules import violations

REPO = Path(__file__).resolve().parents[2]


def test_the_tree_follows_the_import_rules():
    assert violations(REPO) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = tmp_path / "geoxai" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp_path


def test_a_compute_package_importing_io_is_caught(tmp_path):
    root = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "io/__init__.py": "",
            "io/store.py": "X = 1\n",
            "temporal/__init__.py": "",
            "temporal/smoothing.py": "from geoxai.io.store import X\n",
        },
    )
    assert violations(root) == [
        "geoxai/temporal/smoothing.py: geoxai.temporal imports 'geoxai.io.store' "
        "(temporal is compute only)"
    ]


def test_ray_cycles_local_imports_and_size_are_caught(tmp_path):
    root = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from geoxai.b import y\nx = 1\n",
            "b.py": "from geoxai import a\ny = 2\n",
            "c.py": "def f():\n    import ray\n    from geoxai.a import x\n    import numpy\n",
            "d.py": "def g():\n    import matplotlib  # lazy: figures only\n" + "# pad\n" * 700,
        },
    )
    found = violations(root)
    assert "geoxai/c.py: imports 'ray'; geoxai never imports ray" in found
    assert "geoxai/c.py:3: function-local import of 'geoxai.a'; import it at the top" in found
    assert "geoxai/c.py:4: function-local import of 'numpy' without a '# lazy:' reason" in found
    assert "geoxai/d.py: 702 lines (split modules before ~600)" in found
    assert "import cycle: geoxai.a -> geoxai.b" in found
    assert not any("matplotlib" in v for v in found)


def test_type_checking_imports_are_not_cycles(tmp_path):
    root = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from geoxai.b import y\nx = 1\n",
            "b.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from geoxai.a import x\n"
                "y = 2\n"
            ),
        },
    )
    assert violations(root) == []
