"""Render README.md from nbs/index.ipynb, without quarto: `make readme` (or `.venv/bin/python tools/readme.py`).

nbdev's own `nbdev_readme` (nbdev 2.3.37, `nbdev/quarto.py`) processes every notebook of nbs/ into `_proc/` and then
runs `quarto render index.ipynb -t gfm --no-execute`: it needs the quarto binary (not installed here, and
`nbdev_install_quarto` downloads it) and it renders the outputs *saved* in the notebook. This script does the same job
with nbdev's own parts and no quarto:

1. it executes nbs/index.ipynb in memory with execnb's `CaptureShell` (the executor `nbdev_test` uses), in nbs/ as
   `nbdev_test` does, skipping `#| eval: false` cells, so every table is read from results/ at that moment;
2. it applies nbdev's docs processors (`#| hide` removes a cell, `#| hide_line`, `#| export`, magics, ANSI codes);
3. it writes GitHub Markdown the way quarto's gfm writer would with the cell options the notebook uses:
   `#| echo: false` drops a cell's code, `#| output: false` its outputs, `#| include: false` both; a cell's
   `text/markdown` outputs (`IPython.display.Markdown`) and, with `#| output: asis`, its printed text are
   written as Markdown; other text outputs as code blocks.

The notebook on disk is never modified and keeps no outputs; the result is deterministic given results/.

    python tools/readme.py           write README.md
    python tools/readme.py --check   exit 1 (and show a diff) when README.md differs from a fresh rendering
"""
from __future__ import annotations
import difflib, os, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT/"nbs"/"index.ipynb"
OUT = ROOT/"README.md"

_quarto_opt = re.compile(r"^\s*#\|\s*([\w-]+)\s*:\s*(.*?)\s*$")

def _split_options(source:str) -> tuple[dict, str]:
    "Quarto options (`#| key: value` lines) at the top of a code cell, and the code below them."
    lines, opts = source.splitlines(), {}
    while lines and (m := _quarto_opt.match(lines[0])):
        opts[m.group(1)] = m.group(2).lower()
        lines.pop(0)
    return opts, "\n".join(lines).strip()

def _text(x) -> str: return "".join(x) if isinstance(x, list) else str(x)

def _outputs(cell, asis:bool) -> list[str]:
    "Each output of an executed code cell as Markdown."
    parts = []
    for o in cell.get("outputs", []):
        kind = o.get("output_type")
        if kind == "error": raise RuntimeError(f"nbs/index.ipynb failed: {o.get('ename')}: {o.get('evalue')}")
        if kind == "stream":
            if o.get("name") == "stderr": continue
            txt = _text(o.get("text", "")).rstrip()
            if txt: parts.append(txt if asis else f"```\n{txt}\n```")
            continue
        data = o.get("data", {})
        if "text/markdown" in data: parts.append(_text(data["text/markdown"]).strip())
        elif "text/plain" in data:
            txt = _text(data["text/plain"]).rstrip()
            parts.append(txt if asis else f"```\n{txt}\n```")
    return parts

def render(nb_path:Path=NB) -> str:
    "The Markdown of `nb_path`, executed now in its own folder."
    from execnb.nbio import read_nb
    from execnb.shell import CaptureShell
    from fastcore.xtras import working_directory
    from nbdev.process import NBProcessor, extract_directives
    from nbdev.processors import hide_, hide_line, rm_export, clean_magics, strip_ansi, rm_header_dash

    nb = read_nb(nb_path)
    def _no_eval(cell):   # as nbdev_test: only code cells, and not those marked `#| eval: false`
        if cell.cell_type != "code": return True
        return extract_directives(cell, remove=False).get("eval:", [""])[0].lower() == "false"
    shell = CaptureShell(nb_path)
    with working_directory(nb_path.parent):
        shell.run_all(nb, exc_stop=True, preproc=_no_eval)
    nb = NBProcessor(nb=nb, procs=[strip_ansi, hide_line, rm_header_dash, rm_export, clean_magics, hide_],
                     process=True).nb
    parts = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            parts.append(cell.source.strip())
            continue
        if cell.cell_type != "code": continue
        opts, code = _split_options(cell.source)
        if opts.get("include") == "false": continue
        if opts.get("echo") != "false" and code: parts.append(f"```python\n{code}\n```")
        if opts.get("output") != "false": parts += _outputs(cell, asis=opts.get("output") == "asis")
    return "\n\n".join(p for p in parts if p) + "\n"

def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    text = render()
    if "--check" in argv:
        old = OUT.read_text() if OUT.exists() else ""
        if old == text: return 0
        sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), text.splitlines(True),
                                                   "README.md", "README.md from nbs/index.ipynb"))
        print("README.md is out of date: run `make readme`", file=sys.stderr)
        return 1
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)} ({len(text.encode()):,} bytes) from {NB.relative_to(ROOT)}")
    return 0

if __name__ == "__main__": sys.exit(main())
