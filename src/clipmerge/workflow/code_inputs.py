"""Each rule's code inputs, derived from the code: the source files of every clipmerge module its
command imports, directly or through other modules, and the package data those modules read.

Snakemake does not watch source files, so a rule lists these as inputs: editing one reruns exactly
the jobs whose command imports it, and what depends on them. The imports are read statically (``ast``)
from the files of the installed package, function-level (lazy) imports included, so nothing is
imported and no list is kept by hand. What is followed:

- ``import clipmerge.a.b`` and ``from clipmerge.a import b`` (a module or a name in one), relative
  imports too; importing ``clipmerge.a.b`` also runs ``clipmerge/__init__.py`` and ``clipmerge/a/__init__.py``;
- package data a module reads as ``Path(__file__).parent / "<folder>"``: every file in that folder but
  its ``*.md`` notes (the ImageNet class lists, the tiny model config);
- modules a command loads by name at run time (a merge method of the registry) are passed as
  ``extra`` by the rule that runs it.

``clipmerge/cli.py`` is not an input: it only maps a command name to its module, which is the root
of the closure, so remapping a command changes the set of inputs (a rerun) anyway.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import clipmerge
from clipmerge.cli import command_module

PACKAGE = "clipmerge"
PACKAGE_DIR = Path(clipmerge.__file__).resolve().parent


def module_file(module: str) -> Path | None:
    """The source file of a clipmerge module or package, None if there is none."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_package(module: str) -> bool:
    file = module_file(module)
    return file is not None and file.name == "__init__.py"


def _absolute(module: str, node: ast.ImportFrom) -> str:
    """The absolute name ``node`` imports from, inside ``module``."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if _is_package(module) else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


@functools.cache
def _parse(file: Path) -> ast.Module:
    return ast.parse(file.read_text(), filename=str(file))


@functools.cache
def direct_imports(module: str) -> frozenset[str]:
    """The clipmerge modules ``module`` imports (anywhere in its source), and their parent packages."""
    file = module_file(module)
    if file is None:
        return frozenset()
    found: set[str] = set()
    for node in ast.walk(_parse(file)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            found.add(source)
            # `from clipmerge.a import b`: b is a submodule or a name defined in clipmerge.a.
            found |= {f"{source}.{alias.name}" for alias in node.names
                      if module_file(f"{source}.{alias.name}") is not None}
    modules = {m for m in found if m.split(".")[0] == PACKAGE and module_file(m) is not None}
    parents = {".".join(m.split(".")[:i]) for m in modules for i in range(1, m.count(".") + 1)}
    return frozenset(modules | parents)


def data_files(module: str) -> list[Path]:
    """Package data ``module`` reads: files of each folder it names as ``Path(__file__).parent / "x"``."""
    file = module_file(module)
    if file is None:
        return []
    folders = []
    for node in ast.walk(_parse(file)):
        if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant)
                and isinstance(node.right.value, str) and "__file__" in ast.unparse(node.left)):
            folders.append(file.parent / node.right.value)
    return [p for folder in folders if folder.is_dir()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix != ".md"]


def closure(roots: list[str]) -> set[str]:
    """Every clipmerge module ``roots`` import, transitively (the roots and their packages included)."""
    seen: set[str] = set()
    todo = [*roots, *(".".join(r.split(".")[:i]) for r in roots for i in range(1, r.count(".") + 1))]
    while todo:
        module = todo.pop()
        if module in seen or module_file(module) is None:
            continue
        seen.add(module)
        todo.extend(direct_imports(module))
    return seen


@functools.cache
def code_inputs(command: str, *extra: str) -> list[str]:
    """The source and data files behind ``clipmerge <command>`` (plus the modules in ``extra``), sorted."""
    root = command_module(command)
    if module_file(root) is None:
        raise ValueError(f"no module {root} for command {command!r}")
    modules = closure([root, *extra])
    files = {module_file(m) for m in modules} | {p for m in modules for p in data_files(m)}
    return sorted(str(p) for p in files)
