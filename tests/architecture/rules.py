"""The import rules of the layout, read from the source (no import is executed).

- ``geoxai`` never imports ``ray`` (Ray stays at the edge, in ``pipelines``).
- The compute packages (``temporal``, ``models``, ``inference``, ``xai``) never import ``io`` or
  ``mapping``: they take and return arrays and value objects.
- No import cycle between modules (imports under ``if TYPE_CHECKING:`` are not run and do not
  count).
- Function-local imports only for heavy or optional third-party packages, each with a
  ``# lazy: <reason>`` comment on its line; never of ``geoxai`` itself.
- No module over :data:`MAX_LINES` lines.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

COMPUTE = ("temporal", "models", "inference", "xai")
FORBIDDEN_FOR_COMPUTE = ("io", "mapping")
MAX_LINES = 650  # "split before ~600"


@dataclass
class Module:
    name: str
    path: Path
    lines: int
    imports: set[str] = field(default_factory=set)  # runtime imports, with 'module.name' forms
    statements: set[str] = field(default_factory=set)  # the module each import statement names
    local: list[tuple[int, str, str]] = field(default_factory=list)  # (line, module, source line)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out.update(id(n) for n in ast.walk(node))
    return out


def read_package(root: Path, package: str = "geoxai") -> dict[str, Module]:
    """Every module under ``root/package`` with its runtime and function-local imports."""
    mods: dict[str, Module] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        text = path.read_text()
        tree = ast.parse(text)
        src = text.splitlines()
        skip = _type_checking_nodes(tree)
        local_ids: set[int] = set()
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                local_ids.update(id(n) for n in ast.walk(fn))
        m = Module(".".join(parts), path, len(src))
        for node in ast.walk(tree):
            if id(node) in skip or not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            if isinstance(node, ast.ImportFrom):
                if node.level:  # relative import: resolve against this package
                    base = parts[: len(parts) - node.level + (path.name == "__init__.py")]
                    names = [".".join([*base, node.module] if node.module else base)]
                else:
                    names = [node.module or ""]
                names += [f"{names[0]}.{a.name}" for a in node.names]
            else:
                names = [a.name for a in node.names]
            m.imports.update(names)
            m.statements.update(names if isinstance(node, ast.Import) else names[:1])
            if id(node) in local_ids:
                m.local.append(
                    (node.lineno, names[0], "\n".join(src[node.lineno - 1 : node.end_lineno]))
                )
        mods[m.name] = m
    return mods


def _resolve(name: str, mods: dict[str, Module]) -> str | None:
    while name:
        if name in mods:
            return name
        name = name.rpartition(".")[0]
    return None


def edges(mods: dict[str, Module]) -> dict[str, set[str]]:
    """Module -> the package modules it imports at run time."""
    out: dict[str, set[str]] = {}
    for m in mods.values():
        targets = {_resolve(n, mods) for n in m.imports if n.split(".")[0] == m.name.split(".")[0]}
        out[m.name] = {t for t in targets if t and t != m.name}
    return out


def cycles(mods: dict[str, Module]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph = edges(mods)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def violations(root: Path, package: str = "geoxai") -> list[str]:
    """Every broken rule, one line each (empty: the layout holds)."""
    mods = read_package(root, package)
    out: list[str] = []
    for m in mods.values():
        rel = m.path.relative_to(root)
        for name in sorted(m.statements):
            if name.split(".")[0] == "ray":
                out.append(f"{rel}: imports {name!r}; {package} never imports ray")
        sub = m.name.split(".")[1] if "." in m.name else ""
        if sub in COMPUTE:
            for name in sorted(m.statements):
                parts = name.split(".")
                if parts[0] == package and len(parts) > 1 and parts[1] in FORBIDDEN_FOR_COMPUTE:
                    out.append(f"{rel}: {package}.{sub} imports {name!r} ({sub} is compute only)")
        for line, name, text in m.local:
            if name.split(".")[0] == package:
                out.append(f"{rel}:{line}: function-local import of {name!r}; import it at the top")
            elif "# lazy:" not in text:
                out.append(
                    f"{rel}:{line}: function-local import of {name!r} without a '# lazy:' reason"
                )
        if m.lines > MAX_LINES:
            out.append(f"{rel}: {m.lines} lines (split modules before ~600)")
    for comp in cycles(mods):
        out.append("import cycle: " + " -> ".join(comp))
    return out
