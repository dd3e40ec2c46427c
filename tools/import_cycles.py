"""Import circles among a project's modules, read from their source (nothing is imported).

    python tools/import_cycles.py [ROOT] [--packages core gui ...]

Every import counts, at module level or inside a function: a lazy import hides a circle
from Python, not from the reader who must hold both modules in mind. A module is a file;
`from pkg import name` reaches pkg/name.py when that file exists, else pkg/__init__.py.
Prints each circle (a strongly connected group of two or more files, or a file that
imports itself) and exits 1 when there is one.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

PACKAGES = ("cli", "core", "gui", "serve", "blender_addon", "training")


def _module_files(root: Path, packages) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under the packages."""
    files = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join(parts)] = path
    return files


def _imported(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Dotted names each import of `tree` reaches (relative imports resolved)."""
    here = module.split(".") if is_package else module.split(".")[:-1]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here[:len(here) - (node.level - 1)] if node.level > 1 else here
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph(root: Path, packages=PACKAGES) -> dict[str, set[str]]:
    """module -> the project modules it imports (by file)."""
    files = _module_files(root, packages)
    graph = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets = set()
        for name in _imported(tree, module, path.name == "__init__.py"):
            # the longest prefix that is a project module: core.spaces.load_space -> core.spaces
            parts = name.split(".")
            while parts and ".".join(parts) not in files:
                parts.pop()
            if parts:
                targets.add(".".join(parts))
        graph[module] = targets - {module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of two or more modules (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", nargs="?", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--packages", nargs="+", default=list(PACKAGES))
    args = parser.parse_args(argv)
    graph = import_graph(args.root, args.packages)
    found = cycles(graph)
    for group in found:
        members = set(group)
        ties = "; ".join(f"{a} -> {b}" for a in group for b in sorted(graph[a] & members))
        print(f"import circle of {len(group)}: {ties}")
    if not found:
        print(f"no import circle among {len(graph)} modules")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
