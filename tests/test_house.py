"The outer layers: whole module docstrings, a CLI that needs no lmms-eval, an export that fails loudly."
import ast, os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(p for p in (ROOT/"lop").glob("*.py") if p.name not in ("__init__.py", "_modidx.py"))

@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_module_docstring_is_a_whole_sentence(path):
    doc = ast.get_docstring(ast.parse(path.read_text()))
    assert doc, f"{path.name} has no module docstring (the first '> ' line of its notebook)"
    assert doc.rstrip()[-1] in ".!?)", f"{path.name}'s docstring stops mid-sentence: ...{doc[-60:]!r}"

def _without_lmms(code:str) -> subprocess.CompletedProcess:
    "Run `code` in a fresh interpreter in which `import lmms_eval` fails, as where lmms-eval is not installed."
    return subprocess.run([sys.executable, "-c", "import sys; sys.modules['lmms_eval'] = None\n" + code],
                          capture_output=True, text=True, cwd=ROOT, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))

def test_the_cli_needs_no_lmms_eval():
    out = _without_lmms("import lop.cli, lop.load, lop.prune, lop.ondemand\n"
                        "sys.argv = ['lop', 'prune', '--help']\nlop.cli.main()")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "--target" in out.stdout and "--model" in out.stdout

def test_the_guard_really_hides_lmms_eval():   # otherwise the test above proves nothing
    out = _without_lmms("import lop.lmms")
    assert out.returncode != 0 and "lmms_eval" in out.stderr

def test_make_export_fails_on_a_broken_notebook(tmp_path):
    broken = tmp_path/"broken.ipynb"; broken.write_text('{"cells": [')
    out = subprocess.run(["make", "-s", "export", f"NB={broken}"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.returncode != 0, "make export exited 0 on a notebook that is not JSON"

def _lop_imports(path:Path) -> set[str]:
    "The `lop` modules that `path` imports anywhere: at the top, inside functions, relative or absolute."
    names = {p.stem for p in MODULES}
    found = set()
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.ImportFrom) and n.level == 1 and n.module: found.add(n.module.split(".")[0])
        elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module == "lop": found |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom) and n.level == 0 and (n.module or "").startswith("lop."): found.add(n.module.split(".")[1])
        elif isinstance(n, ast.Import): found |= {a.name.split(".")[1] for a in n.names if a.name.startswith("lop.")}
    return (found & names) - {path.stem}

IMPORTS = {p.stem: _lop_imports(p) for p in MODULES}

def test_the_reader_sees_function_level_imports():   # otherwise the tests below prove nothing
    assert "load" in IMPORTS["cli"] and "core" in IMPORTS["dataset"]   # `from lop.load import ...` inside cmd_*, `from .core import *`
    assert _lop_imports(Path(ast.__file__)) == set()

def test_no_import_cycle():
    import graphlib
    try: list(graphlib.TopologicalSorter(IMPORTS).static_order())
    except graphlib.CycleError as e: pytest.fail(f"lop's modules import each other in a circle: {' → '.join(e.args[1])}")

@pytest.mark.parametrize("top", ["cli", "bench"])
def test_nothing_imports_the_top_floor(top):
    "The command line and the benchmarks sit on top: no module of lop imports them."
    assert not [m for m, deps in IMPORTS.items() if top in deps]

def test_the_dataset_does_not_know_ray():
    "A lower module takes its runner as an argument: the dataset never imports lop.scale (nor Ray)."
    import re
    assert "scale" not in IMPORTS["dataset"] and not re.search(r"^\s*(import|from) ray\b", (ROOT/"lop"/"dataset.py").read_text(), re.M)

NOTEBOOKS = sorted((ROOT/"nbs").rglob("*.ipynb"))

@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT/"nbs")))
def test_notebooks_are_valid_without_warnings(path):
    "Every notebook reads and validates silently (nbformat 4.4: nbdev_clean strips cell ids, which 4.5 requires)."
    import warnings, nbformat
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    assert (nb.nbformat, nb.nbformat_minor) == (4, 4)
