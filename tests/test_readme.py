"The README is short, starts with the two commands, embeds results/ tables unchanged, and its links and docs/ links resolve."
import os, re, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT/"README.md"
PAGES = [README, *sorted((ROOT/"docs").glob("*.md"))]
_embedded = re.compile(r"<!-- begin (results/[\w.-]+\.md) -->\n(.*?)\n<!-- end \1 -->", re.S)

def _text(p:Path) -> str: return p.read_text(encoding="utf-8")

def test_readme_is_short():
    size = len(README.read_bytes())
    assert size < 15_000, f"README.md is {size:,} bytes: keep it under 15 KB (longer prose goes to docs/)"

def test_the_first_code_block_is_the_two_commands():
    first = re.search(r"```[^\n]*\n(.*?)```", _text(README), re.S)
    assert first, "README.md has no fenced code block"
    assert "make reproduce" in first.group(1) and "make test" in first.group(1), first.group(1)

def test_embedded_tables_are_the_results_files():
    text = _text(README)
    blocks = _embedded.findall(text)
    assert blocks, "README.md embeds no results/*.md file (nbs/index.ipynb wraps each in <!-- begin/end results/x.md -->)"
    for name, body in blocks:
        assert body.strip() == _text(ROOT/name).strip(), f"README.md's copy of {name} differs from the file: run `make readme`"
        assert "<sub>commit:" in body, f"{name} lost its provenance line"

def test_no_table_is_pasted_outside_an_embedded_file():
    outside = _embedded.sub("", _text(README))
    rows = [l for l in outside.splitlines() if re.match(r"\s*\|.*\|\s*$", l)]
    assert not rows, f"README.md has table rows not read from results/: {rows[:3]}"

def _slug(heading:str) -> str:
    "GitHub's anchor for a heading."
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")

def _links(text:str):
    text = re.sub(r"```.*?```", "", text, flags=re.S)                         # not inside code blocks
    text = re.sub(r"`[^`\n]*`", "", text)                                      # nor code spans
    yield from re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", text)
    yield from re.findall(r"""(?:src|href)=["']([^"']+)["']""", text)

@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    bad = []
    for link in _links(_text(page)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", link, re.I) or link.startswith("//"): continue   # http:, mailto:, ...
        path, _, anchor = link.partition("#")
        target = (page.parent/path).resolve() if path else page
        if not target.exists(): bad.append(f"{link} (no {target.relative_to(ROOT) if ROOT in target.parents else target})")
        elif anchor and target.suffix == ".md":
            headings = re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", _text(target), re.M)
            if anchor not in {_slug(h) for h in headings}: bad.append(f"{link} (no heading #{anchor})")
    assert not bad, f"{page.relative_to(ROOT)}: broken links: {bad}"

def test_readme_is_what_the_notebook_renders():
    "README.md is `make readme`'s output for the current results/ (tools/readme.py executes nbs/index.ipynb: ~2 s)."
    out = subprocess.run([sys.executable, str(ROOT/"tools"/"readme.py"), "--check"], capture_output=True, text=True,
                         cwd=ROOT, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, f"README.md is not what nbs/index.ipynb renders: run `make readme`\n{out.stdout[-3000:]}{out.stderr[-2000:]}"
