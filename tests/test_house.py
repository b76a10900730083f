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
