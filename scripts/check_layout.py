#!/usr/bin/env python3
"""Checks two rules of the workspace layout that the compiler does not:

1. No import circle between the modules of a crate: module A names module B
   (`use crate::b::...`, `super::...`, a path `crate::b::f(...)`) and B names A, directly
   or round a longer loop. Child modules of one parent are separate modules; a file's
   `#[cfg(test)]` tail is left out, since a test module names its parent by design.
2. No source file over 600 lines, test files (under a `tests/` folder, or `benches/`)
   excepted.

    scripts/check_layout.py   # circles in tessera-api and tessera-auth, long files anywhere

Prints every circle and every long file; exits 1 if there is any.
"""

import re
import sys
from pathlib import Path

MAX_LINES = 600


def module_of(src: Path, file: Path) -> tuple[str, ...]:
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts.pop()
    return tuple(parts)


def strip_tests(text: str) -> str:
    cut = text.find("#[cfg(test)]")
    return text if cut < 0 else text[:cut]


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//")[0] for line in text.split("\n"))


def resolve(path: list[str], modules: set[tuple[str, ...]]) -> tuple[str, ...]:
    """The longest module that prefixes `path`."""
    for n in range(len(path), -1, -1):
        if tuple(path[:n]) in modules:
            return tuple(path[:n])
    return ()


def use_paths(text: str) -> list[list[str]]:
    """Every path a file names: `use` trees expanded one level, and inline `crate::`/
    `super::` paths."""
    paths = []
    for m in re.finditer(r"\buse\s+((?:crate|super|self)(?:::\w+)*)(?:::\{([^;]*)\})?\s*;", text, re.S):
        base = m.group(1).split("::")
        if m.group(2):
            for item in m.group(2).split(","):
                item = item.strip().split(" as ")[0].strip()
                if not item:
                    continue
                head = re.split(r"::\{", item)[0]
                paths.append(base + [p for p in head.split("::") if p and p != "self"])
        else:
            paths.append(base)
    for m in re.finditer(r"(?<![\w:])((?:crate|super)(?:::\w+)+)", text):
        paths.append(m.group(1).split("::"))
    return paths


def absolute(path: list[str], here: tuple[str, ...], is_mod_file: bool) -> list[str]:
    if path[0] == "crate":
        return path[1:]
    current = list(here)
    rest = path
    # In `foo/mod.rs` or `foo.rs`, `super` is foo's parent; `self` is foo.
    while rest and rest[0] in ("super", "self"):
        if rest[0] == "super":
            current = current[:-1]
        rest = rest[1:]
    return current + rest


def cycles(edges: dict) -> list[list]:
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
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
                out.append(comp)

    for v in list(edges):
        if v not in index:
            visit(v)
    return out


CIRCLE_FREE = ["crates/api/src", "crates/auth/src"]


def long_files(root: Path) -> list[str]:
    problems = []
    for f in sorted(root.rglob("*.rs")):
        rel = f.relative_to(root)
        if rel.parts[0] in ("target",) or rel.parts[0].startswith(".") or "tests" in rel.parts or "benches" in rel.parts:
            continue
        n = len(f.read_text().splitlines())
        if n > MAX_LINES:
            problems.append(f"{rel}: {n} lines (more than {MAX_LINES})")
    return problems


def check_crate(src: Path) -> list[str]:
    problems = []
    files = sorted(src.rglob("*.rs"))
    modules = {module_of(src, f) for f in files}
    edges = {}
    for f in files:
        here = module_of(src, f)
        text = f.read_text()
        code = strip_comments(strip_tests(text))
        targets = [resolve(absolute(p, here, f.name == "mod.rs"), modules) for p in use_paths(code)]
        # Paths relative to this module: `child::item`, in a `use` or inline.
        for m in re.finditer(r"(?<![\w:])(\w+)((?:::\w+)+)", code):
            first = m.group(1)
            if first not in ("crate", "super", "self") and here + (first,) in modules:
                targets.append(resolve(list(here) + [first] + m.group(2).split("::")[1:], modules))
        for target in targets:
            if target != here:
                edges.setdefault(here, set()).add(target)
    for comp in cycles(edges):
        names = ", ".join("::".join(m) or "(crate root)" for m in sorted(comp))
        problems.append(f"{src}: import circle between {names}")
    return problems


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    problems = long_files(root)
    for src in CIRCLE_FREE:
        problems += check_crate(root / src)
    for p in problems:
        print(f"layout: {p}")
    if not problems:
        print(
            f"layout: no import circle in {', '.join(CIRCLE_FREE)}; "
            f"no source file over {MAX_LINES} lines"
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
