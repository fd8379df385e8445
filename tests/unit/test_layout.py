"""The package's boundaries, checked: no module outside the engine touches a private member
of the Engine, no private name is imported across modules, and the model renders itself
without loading a widget library."""

import ast
import subprocess
import sys
from pathlib import Path

import agentorch_nb

PACKAGE = Path(agentorch_nb.__file__).parent
# The Engine's own modules: its base classes (attempts, planning, recording) are part of it.
ENGINE_MODULES = {PACKAGE / "engine" / f"{name}.py" for name in ("dispatch", "attempts", "planning", "recording")}


def modules():
    return sorted(PACKAGE.rglob("*.py"))


def engine_privates() -> set[str]:
    names = set()
    for path in ENGINE_MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id == "self" and _private(node.attr):
                names.add(node.attr)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _private(node.name):
                names.add(node.name)
    return names


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_module_outside_the_engine_touches_its_private_members():
    private = engine_privates()
    assert {"_seq", "_counts", "_dirty", "_main_task"} <= private  # the check sees them
    found = []
    for path in modules():
        if path in ENGINE_MODULES:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr in private
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} .{node.attr}")
            # getattr(ctx, "_engine") is the same reach by another road.
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in ("getattr", "hasattr", "setattr") and len(node.args) > 1
                    and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
                    and node.args[1].value in private | {"_engine"}):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.func.id} "
                             f"{node.args[1].value}")
    assert not found, "private Engine members used outside the engine:\n" + "\n".join(found)


def test_no_private_name_is_imported_across_modules():
    found = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or node.module == "__future__":
                continue
            base = _module_dir(path, node)
            for alias in node.names:
                if _private(alias.name) and not _is_module(base, alias.name):
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {alias.name}")
    assert not found, "private names imported from another module:\n" + "\n".join(found)


def _module_dir(path: Path, node: ast.ImportFrom) -> Path | None:
    if node.level == 0:
        if not (node.module or "").startswith("agentorch_nb"):
            return None
        return PACKAGE.parent.joinpath(*node.module.split("."))
    base = path.parent
    for _ in range(node.level - 1):
        base = base.parent
    return base.joinpath(*node.module.split(".")) if node.module else base


def _is_module(base: Path | None, name: str) -> bool:
    """``from package import _module`` names a private module of the package: allowed."""
    return base is not None and ((base / f"{name}.py").exists() or (base / name).is_dir())


def test_a_task_renders_without_loading_widget_libraries():
    code = ("import sys, agentorch_nb\n"
            "from agentorch_nb.model import Task\n"
            "html = Task(id='t1', run_id='r', title='x')._repr_html_()\n"
            "assert 't1' in html\n"
            "print(sorted(m for m in ('ipywidgets', 'anywidget') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr


def test_modules_stay_small_or_say_why():
    long = [p for p in modules() if len(p.read_text().splitlines()) > 420
            and "kept in one module" not in p.read_text()[:3000]]
    assert not long, f"modules over 420 lines whose docstring does not say why: {long}"
