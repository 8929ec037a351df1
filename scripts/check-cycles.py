#!/usr/bin/env python3
"""Fails when the modules of a crate import each other in a circle.

Reads every `crate::a::b` path in the crate's `src/` (in `use` lines and in code) and builds
two graphs: one between the crate's top-level modules (`api`, `gateway`, `store`, ...), and,
inside each directory module, one between its sibling files (`gateway/keys` → `gateway/limits`).
A child reaching its parent (`super::`) is not an edge: a parent owns its children. Binaries
under `src/bin/` are leaves and are not checked. Prints every cycle found, exits 1 if any.

Usage: scripts/check-cycles.py [SRC_DIR ...]   (default: src tui/src sample-addon/src)
"""

import pathlib
import re
import sys

PATH_RE = re.compile(r"\bcrate::((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)")
USE_GROUP_RE = re.compile(r"\buse\s+crate::\{([^;]*)\};", re.S)
COMMENT_RE = re.compile(r"//[^\n]*")


def module_of(src: pathlib.Path, file: pathlib.Path) -> tuple[str, ...]:
    rel = file.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def references(text: str) -> list[tuple[str, ...]]:
    text = COMMENT_RE.sub("", text)
    out = [tuple(m.group(1).split("::")) for m in PATH_RE.finditer(text)]
    # `use crate::{a::X, b}`: the first segment of every item in the group is a module.
    for group in USE_GROUP_RE.finditer(text):
        for item in re.split(r",(?![^{]*})", group.group(1)):
            item = item.strip()
            if item:
                out.append(tuple(re.split(r"::", item.split("{")[0].strip(": "))))
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def check(src: pathlib.Path) -> list[str]:
    files = [f for f in src.rglob("*.rs") if "bin" not in f.relative_to(src).parts[:1]]
    modules = {module_of(src, f) for f in files}
    top: dict[str, set[str]] = {}
    siblings: dict[tuple[str, ...], dict[str, set[str]]] = {}
    for f in files:
        me = module_of(src, f)
        if not me:
            continue
        for ref in references(f.read_text()):
            # The deepest module the path names (the rest are items).
            target = ()
            for n in range(len(ref), 0, -1):
                if ref[:n] in modules:
                    target = ref[:n]
                    break
            if not target:
                continue
            if target[0] != me[0]:
                top.setdefault(me[0], set()).add(target[0])
                continue
            # Inside one directory module: edges between different children of the same parent.
            common = 0
            while common < min(len(me), len(target)) and me[common] == target[common]:
                common += 1
            if common < len(me) and common < len(target):
                parent = me[:common]
                siblings.setdefault(parent, {}).setdefault(me[common], set()).add(target[common])
    found = [f"{src}: crate::{{{', '.join(c)}}}" for c in cycles(top)]
    for parent, graph in sorted(siblings.items()):
        found += [f"{src}: inside crate::{'::'.join(parent)}: {{{', '.join(c)}}}" for c in cycles(graph)]
    return found


def main() -> int:
    roots = [pathlib.Path(a) for a in sys.argv[1:]] or [p for p in map(pathlib.Path, ["src", "tui/src", "sample-addon/src"]) if p.is_dir()]
    found = [c for r in roots for c in check(r)]
    for c in found:
        print(f"import cycle: {c}")
    if not found:
        print(f"check-cycles: no import cycle among the modules of {', '.join(map(str, roots))}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
