"""The folder tree is the architecture (docs/ARCHITECTURE.md), and these tests keep it so.

Layers, bottom to top: ``config``/``domains`` -> ``nets`` -> ``weights`` -> ``data`` -> ``training`` -> ``edit`` ->
``evaluation`` -> ``classroom`` -> the command line. A module imports its own layer and those below, never one
above; no module imports another module's ``_private`` names; training runs without the editing stack's heavy
dependencies; files stay small; docstrings say why and point to docs/ for measured figures.
"""
import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = ROOT / "stargan_core"
LAYERS = [  # bottom to top
    ("stargan_core.config", "stargan_core.domains"),
    ("stargan_core.nets",),
    ("stargan_core.weights",),
    ("stargan_core.data",),
    ("stargan_core.training",),
    ("stargan_core.edit",),
    ("stargan_core.evaluation",),
    ("stargan_core.classroom",),
    ("stargan_core.cli", "stargan_core.__main__", "stargan_core.pipeline", "stargan_core"),
]
OURS = ("stargan_core", "demo", "benchmarks", "conftest", "official_layout", "hub_files", "test_")
SOURCES = sorted([*PACKAGE.rglob("*.py"), *(ROOT / "demo").glob("*.py"), *(ROOT / "benchmarks").glob("*.py"),
                  ROOT / "app.py"])
ALL_PY = sorted([*SOURCES, *(ROOT / "tests").glob("*.py")])


def module_name(path: Path) -> str:
    """'stargan_core/edit/blend.py' -> 'stargan_core.edit.blend'; a package's __init__ is the package; tests and
    app.py are top-level modules, as pytest and Python import them."""
    rel = path.relative_to(ROOT / "tests" if path.parent.name == "tests" else ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


KNOWN = {module_name(p) for p in ALL_PY}


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(absolute module, imported names, line) for every import statement in ``path``, relative ones resolved;
    ``from pkg import mod`` where pkg.mod is one of ours is reported as the module pkg.mod."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names = [a.name for a in node.names]
            submodules = [n for n in names if f"{module}.{n}" in KNOWN]
            out += [(f"{module}.{n}", [], node.lineno) for n in submodules]
            rest = [n for n in names if n not in submodules]
            if rest or not submodules:
                out.append((module, rest, node.lineno))
    return out


def layer(module: str) -> int | None:
    """The layer of a stargan_core module (the longest matching prefix), None for anything else."""
    best = None
    for i, names in enumerate(LAYERS):
        for prefix in names:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (i, len(prefix))
    return None if best is None else best[0]


def ours(module: str) -> bool:
    return module.split(".")[0] in OURS[:-1] or module.startswith(OURS[-1])


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_training_the_nets_and_the_losses_import_without_the_editing_stack():
    """A fresh interpreter imports the training loop, the nets and the losses without facenet-pytorch, kornia,
    Gradio or ONNX Runtime, and without any module of stargan_core.edit."""
    code = ("import sys\n"
            "import stargan_core.training.loop, stargan_core.nets.model, stargan_core.nets.losses\n"
            "heavy = ('facenet_pytorch', 'kornia', 'gradio', 'onnxruntime')\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m.startswith('stargan_core.edit')))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_no_module_imports_a_layer_above_its_own():
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        own = layer(module_name(path))
        for module, _, line in imports(path):
            theirs = layer(module) if module.startswith("stargan_core") else None
            if theirs is not None and theirs > own:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_only_faces_py_imports_facenet_pytorch():
    users = [str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")
             if any(m.split(".")[0] == "facenet_pytorch" for m, _, _ in imports(p))]
    assert users == ["stargan_core/edit/faces.py"]


def test_no_module_imports_another_modules_private_names():
    """Neither ``from x import _name`` nor ``x._name`` on a module of ours, in the package, the app, the
    benchmarks or the tests: what one module needs of another is public, with a docstring."""
    wrong = []
    for path in ALL_PY:
        tree, bound = ast.parse(path.read_text()), {}
        for module, names, line in imports(path):
            if ours(module):
                wrong += [f"{path.relative_to(ROOT)}:{line} imports {module}.{n}" for n in names if private(n)]
        for node in ast.walk(tree):  # names bound to our modules: import a.b as m, from a import b
            if isinstance(node, ast.Import):
                bound |= {(a.asname or a.name.split(".")[0]): a.name if a.asname else a.name.split(".")[0]
                          for a in node.names if ours(a.name)}
            elif isinstance(node, ast.ImportFrom):
                for module, _, _ in imports(path):
                    bound |= {(a.asname or a.name): module for a in node.names
                              if module.endswith("." + a.name) and module in KNOWN}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and private(node.attr):
                chain, value = [], node.value
                while isinstance(value, ast.Attribute):
                    chain.insert(0, value.attr)
                    value = value.value
                if isinstance(value, ast.Name) and value.id in bound:
                    target = ".".join([bound[value.id], *chain])
                    if target in KNOWN and target != module_name(path):
                        wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} uses {target}.{node.attr}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("path", ALL_PY, ids=lambda p: str(p.relative_to(ROOT)))
def test_source_files_stay_small(path):
    assert len(path.read_text().splitlines()) <= 350, "split it along a concept (docs/ARCHITECTURE.md)"


FIGURE = re.compile(r"\d(?:[\d,.]*\d)?\s?%|\d(?:[\d,.]*\d)?\s?ms\b")  # "37.8%", "1,000 %", "44.6 ms"
BOUND = re.compile(r"(?:[<>]=?|\bat (?:most|least)|\bwithin|\bbelow|\babove)\s*$")  # ">= 90%", "at most 0.5%"


def test_docstrings_quote_no_measured_percentage_or_milliseconds():
    """Measured figures go stale with every model and machine: they live in docs/ (dated, with the command that
    reproduces them), and a docstring keeps the reason and a pointer. In the tests, a figure right after a bound
    (">= 90%", "at most 0.5%") is the bar the test asserts, not a measurement, and may stay."""
    found = []
    for path in ALL_PY:
        test = path.parent.name == "tests"
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node) or ""
                found += [f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 1)}: {m.group()}"
                          for m in FIGURE.finditer(doc) if not (test and BOUND.search(doc[:m.start()]))]
    assert not found, "\n".join(found)
