"The real pretrained models: masked = sliced, save → load exact, the on-demand user path, and bad input, offline."
import json, subprocess, sys
from pathlib import Path
import pytest, torch
from lop.core import LOPError
from lop.load import load_model
from lop.text import text_data
from lop.importance import collect_importance
from lop.prune import make_plan, masked, slice_ffn, save_pruned, load_pruned
from lop.models import find_ffns

@pytest.fixture(scope="module")
def smol():
    return load_model("smollm2-135m", device="cpu")

def _masked_equals_sliced(model, tok, ratio=0.3):
    td = text_data(tok, "pydoc", calibration=2, validation=1, test=2, last_word=1)
    plan = make_plan(collect_importance(model, td.calibration, "l2", progress=False), ratio)
    x = td.test[:, :64]
    with torch.no_grad():
        with masked(model, plan): y_masked = model(input_ids=x).logits
        slice_ffn(model, plan); y_sliced = model(input_ids=x).logits
    return y_masked, y_sliced, plan, x

@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_masked_equals_sliced_on_real_models(name):
    model, tok = load_model(name, device="cpu")
    y_masked, y_sliced, plan, _ = _masked_equals_sliced(model, tok)
    scale = y_masked.abs().max()
    assert (y_masked - y_sliced).abs().max() <= 1e-5 * scale     # float32, within 1e-5 of the logits' scale
    assert [f.width for f in find_ffns(model)] == plan.kept

def test_save_load_is_exact_and_generates_the_same(tmp_path, smol):
    model, tok = load_model("smollm2-135m", device="cpu")
    _, y, _, x = _masked_equals_sliced(model, tok)
    save_pruned(model, tmp_path/"p", tok)
    back = load_pruned(tmp_path/"p")
    with torch.no_grad(): assert torch.equal(back(input_ids=x).logits, y)
    q = tok("The capital of France is", return_tensors="pt")
    a = model.generate(**q, max_new_tokens=8, do_sample=False); b = back.generate(**q, max_new_tokens=8, do_sample=False)
    assert torch.equal(a, b)

@pytest.mark.slow   # the real model end to end through the command line
def test_prune_on_demand_from_the_command_line(tmp_path):
    "The user path: `lop prune --model smollm2-135m` with the shipped predictor and scores, then load_pruned and generate."
    lop = str(Path(sys.executable).parent/"lop")
    r = subprocess.run([lop, "prune", "--model", "smollm2-135m", "--target", "0.3", "--out", str(tmp_path/"s30")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    model, tok = load_model(str(tmp_path/"s30"), device="cpu")
    widths = [f.width for f in find_ffns(model)]
    assert abs(1 - sum(widths) / (30 * 1536) - 0.3) < 2e-3 and len(set(widths)) > 1     # LOP's per-layer ratios, not uniform
    out = model.generate(**tok("The capital of France is", return_tensors="pt"), max_new_tokens=5, do_sample=False)
    assert out.shape[1] > 5

@pytest.mark.parametrize("call, msg", [
    (lambda: load_model("llama-7b"), "not a registered name"),
    (lambda: text_data(load_model("smollm2-135m", device="cpu")[1], "pydoc", test=100_000), "windows of 256"),
    (lambda: text_data(None, "wikitext"), "unknown corpus"),
])
def test_bad_input(call, msg):
    with pytest.raises(LOPError, match=msg) as e: call()
    assert "fix:" in str(e.value)

def test_cli_works_without_lmms_eval():
    "`lop prune --help` and importing the CLI need no lmms-eval (the module is hidden from the interpreter)."
    code = "import sys; sys.modules['lmms_eval'] = None; import lop.cli; sys.exit(lop.cli.main(['prune', '--help']))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "--target" in r.stdout, r.stderr[-2000:]

@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_shipped_artefacts_match_their_checksums_and_model(name):
    "What ships for a real model is intact (sha256 as recorded) and was made on that very model (fingerprint)."
    from lop.core import file_sha256
    from lop.dataset import read_dataset
    from lop.models import model_fingerprint
    from lop.importance import load_importance
    from lop.realmodels import real_assets
    d = real_assets(name); a = json.loads((d/"artefacts.json").read_text())
    assert {"importance_l2.safetensors", "dataset.jsonl", "predictor.safetensors"} <= set(a["files"])
    for f, h in a["files"].items(): assert file_sha256(d/f) == h, f
    model, _ = load_model(name, device="cpu")
    fp = model_fingerprint(model)
    assert a["fingerprint"] == fp
    for f in a["files"]:
        if f.endswith(".jsonl"): assert all(r["model"] == fp for r in read_dataset(d/f)), f   # every search dataset, both teachers
    load_importance(d/"importance_l2.safetensors", model=model)   # raises unless computed on this model

@pytest.mark.slow   # the real model end to end through the command line
def test_eval_on_text_from_the_command_line(tmp_path):
    "`lop eval` on a text model: perplexity with its interval and last-word accuracy, dense and pruned on demand."
    lop = str(Path(sys.executable).parent/"lop")
    out = {}
    for name, extra in (("dense", []), ("lop30", ["--target", "0.3"])):
        r = subprocess.run([lop, "eval", "--model", "smollm2-135m", "--windows", "2", "--last-word", "4", "--out", str(tmp_path/f"{name}.json"), *extra],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        out[name] = json.loads((tmp_path/f"{name}.json").read_text())
    for o in out.values(): assert o["ppl_lo"] <= o["perplexity"] <= o["ppl_hi"] and len(o["nll"]) == 2
    assert out["lop30"]["perplexity"] > out["dense"]["perplexity"]
