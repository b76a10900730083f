import json, os, subprocess, sys
from pathlib import Path
import pytest
from lop.core import LOPError
from lop.lmms import write_lmms_tasks
from lop.load import load_model, apply_pruning
from lop.testbed import build_processor, build_model, save_testbed

@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    d = tmp_path_factory.mktemp("lmms")
    proc = build_processor(); save_testbed(build_model(proc, layers=2), proc, d / "model")
    write_lmms_tasks(d / "tasks", "val", n=2, tasks=["pope", "mmbench"])
    return d

def test_stock_lmms_eval_cli_finds_the_lop_model(untrained, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1")
    cmd = [str(Path(sys.executable).parent / "lmms-eval"), "--model", "lop", "--model_args", f"pretrained={untrained / 'model'},device=cpu",
           "--tasks", "lop_synthvqa", "--include_path", str(untrained / "tasks"), "--output_path", str(tmp_path / "out"),
           "--verbosity", "DEBUG"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = [json.loads(p.read_text()) for p in (tmp_path / "out").rglob("*results*.json")]
    assert res, f"no results file: {list((tmp_path / 'out').rglob('*'))}"
    scores = res[0]["results"]
    assert set(scores) == {"lop_synthvqa_pope", "lop_synthvqa_mmbench"}
    assert 0 <= scores["lop_synthvqa_pope"]["lop_score,none"] <= 100
    assert res[0]["n-samples"]["lop_synthvqa_mmbench"]["effective"] == 8   # 2 questions × 4 circular rotations

def test_bad_pretrained_and_pruning_specs(untrained, tmp_path):
    with pytest.raises(LOPError, match="no such folder"): load_model(str(tmp_path / "nowhere"), device="cpu")
    m, proc = load_model(str(untrained / "model"), device="cpu")
    with pytest.raises(LOPError, match="needs importance scores"): apply_pruning(m, target=0.3)
    with pytest.raises(LOPError, match="not both"): apply_pruning(m, plan="x.json", target=0.3)
    with pytest.raises(LOPError, match="no plan file"): apply_pruning(m, plan=str(tmp_path / "missing.json"))

def test_pruning_spec_by_target_and_scores(untrained, tmp_path):
    from lop.importance import collect_importance, save_importance
    from lop.models import find_ffns
    from lop.prune import kept_width
    m, proc = load_model(str(untrained / "model"), device="cpu")
    calib = [proc(["<bos> is there a red circle ?"], images=None)]
    save_importance(collect_importance(m, calib, progress=False), tmp_path / "s.safetensors")
    widths = [f.width for f in find_ffns(m)]
    apply_pruning(m, target=0.5, scores=str(tmp_path / "s.safetensors"))
    assert [f.width for f in find_ffns(m)] == [kept_width(w, 0.5) for w in widths] == [w // 2 for w in widths]

def test_pruning_spec_by_target_scores_and_predictor(untrained, tmp_path):
    import numpy as np
    from lop.importance import collect_importance, save_importance
    from lop.models import find_ffns
    from lop.predictors import train_predictor, save_predictor, predict
    from lop.prune import kept_width
    m, proc = load_model(str(untrained / "model"), device="cpu")
    save_importance(collect_importance(m, [proc(["<bos> is there a red circle ?"], images=None)], progress=False), tmp_path / "s.safetensors")
    recs = [dict(target=t, ratios=[1.5 * t, 0.5 * t], lo=0.0, hi=0.95) for t in np.round(np.arange(0.05, 0.61, 0.05), 3)]
    net, _ = train_predictor("mlp", recs, epochs=50, progress=False)
    save_predictor(net, tmp_path / "p.safetensors")
    width = find_ffns(m)[0].width
    apply_pruning(m, target=0.4, scores=str(tmp_path / "s.safetensors"), predictor=str(tmp_path / "p.safetensors"))
    assert [f.width for f in find_ffns(m)] == [kept_width(width, r) for r in predict(net, [0.4])[0]]
    with pytest.raises(LOPError, match="predictor= needs a target="): apply_pruning(m, predictor=str(tmp_path / "p.safetensors"))

def test_the_lmms_model_takes_a_pruned_folder_in_either_format(untrained, tmp_path):
    "The folder `lop prune` writes (lop's format or the Hugging Face one) is what `--model_args pretrained=` takes."
    import torch
    from lop.importance import collect_importance, save_importance
    from lop.lmms import LOPModel
    from lop.models import find_ffns
    from lop.prune import save_pruned
    m, proc = load_model(str(untrained / "model"), device="cpu")
    save_importance(collect_importance(m, [proc(["<bos> is there a red circle ?"], images=None)], progress=False), tmp_path / "s.safetensors")
    apply_pruning(m, target=0.4, scores=str(tmp_path / "s.safetensors"))
    x = proc(["<bos> is there a red circle ?"], images=None)
    with torch.no_grad(): want = m(**x).logits
    for fmt in ("lop", "hf"):
        lm = LOPModel(pretrained=str(save_pruned(m, tmp_path / fmt, proc, format=fmt)), device="cpu")
        assert [f.width for f in find_ffns(lm.model)] == [f.width for f in find_ffns(m)], fmt
        with torch.no_grad(): torch.testing.assert_close(lm.model(**x).logits, want, rtol=0, atol=1e-5)
