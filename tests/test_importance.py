import pytest, torch
from hypothesis import given, settings, strategies as st
from lop.core import LOPError, collate
from lop.importance import collect_importance, save_importance, load_importance, METRICS
from lop.models import find_ffns
from lop.toy import toy_model, toy_sample, toy_batch, TOY_KINDS

def reference_activations(m, batches, layer):
    "h = act(gate(x)) * up(x) at real tokens, from the recorded FFN inputs, in float64."
    f = find_ffns(m)[layer]; xs = []
    h = f.mlp.register_forward_pre_hook(lambda mod, a: xs.append(a[0].detach()))
    with torch.no_grad():
        for b in batches: m(**b)
    h.remove()
    g, u = f.gate.weight.double(), f.up.weight.double()
    return torch.cat([(f.act(x.double() @ g.T) * (x.double() @ u.T))[b["attention_mask"].bool()] for x, b in zip(xs, batches)])

@pytest.mark.parametrize("kind", ["qwen2_5_vl", "llava", "llama"])
def test_scores_match_the_formulas(kind, calib):
    m = toy_model(kind); batches = calib(m)
    h = reference_activations(m, batches, 1)
    d = find_ffns(m)[1].down.weight.double()
    f = find_ffns(m)[1]
    expect = dict(l2=h.pow(2).sum(0).sqrt(), wanda=h.pow(2).sum(0).sqrt() * d.abs().sum(0),
                  flap=h.var(0) * d.pow(2).sum(0),
                  magnitude=(f.gate.weight.double().pow(2).sum(1) + f.up.weight.double().pow(2).sum(1) + d.pow(2).sum(0)).sqrt())
    for metric in METRICS:
        got = collect_importance(m, batches, metric, progress=False)
        assert len(got.scores) == 3 and got.scores[1].dtype == torch.float32
        torch.testing.assert_close(got.scores[1].double(), expect[metric], rtol=1e-4, atol=1e-6)
    assert collect_importance(m, batches, "flap", progress=False).mean[1].double().sub(h.mean(0)).abs().max() < 1e-5

def test_hand_computed_example():
    # one token, known FFN input x: h_j = silu(g_j·x)·(u_j·x), l2 score = |h_j|
    m = toy_model("llama", layers=1)
    f = find_ffns(m)[0]
    x = torch.zeros(1, 1, 32); x[..., 0] = 2.0
    with torch.no_grad():
        f.gate.weight.zero_(); f.up.weight.zero_()
        f.gate.weight[0, 0], f.up.weight[0, 0] = 1.0, 3.0     # h_0 = silu(2)·6
        f.gate.weight[1, 0], f.up.weight[1, 0] = -1.0, 1.0    # h_1 = silu(-2)·2
    hnd = f.mlp.register_forward_pre_hook(lambda mod, a: (x.expand_as(a[0]).contiguous(),))
    s = collect_importance(m, [dict(input_ids=torch.tensor([[5]]))], progress=False).scores[0]
    hnd.remove()
    silu = lambda v: v / (1 + torch.exp(-torch.tensor(v)))
    assert torch.allclose(s[0], silu(2.0) * 6, atol=1e-6) and torch.allclose(s[1], silu(-2.0).abs() * 2, atol=1e-6)
    assert s[2:].abs().max() == 0

@pytest.mark.parametrize("kind", TOY_KINDS)
def test_a_dead_neuron_scores_zero(kind, calib):
    m = toy_model(kind); f = find_ffns(m)[2]
    with torch.no_grad(): f.gate.weight[5] = 0; f.up.weight[5] = 0
    for metric in ("l2", "wanda", "flap"):
        assert collect_importance(m, calib(m), metric, progress=False).scores[2][5] == 0

@pytest.mark.parametrize("kind", ["qwen2_5_vl", "qwen2_vl", "llava", "mistral"])
def test_padded_batches_score_like_unpadded_samples(kind):
    m = toy_model(kind)
    samples = [toy_sample(m, n, seed=i) for i, n in enumerate((14, 9, 7, 11))]
    for metric in ("l2", "flap"):
        padded = collect_importance(m, [collate(samples[:2]), collate(samples[2:])], metric, progress=False)
        single = collect_importance(m, samples, metric, progress=False)
        assert padded.meta["tokens"] == single.meta["tokens"] == 41
        for a, b in zip(padded.scores, single.scores): torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)

def test_low_precision_models_accumulate_in_float32(calib):
    m = toy_model("qwen2", dtype=torch.bfloat16)
    s = collect_importance(m, calib(m), progress=False)
    assert all(x.dtype == torch.float32 and torch.isfinite(x).all() for x in s.scores)

def test_memory_does_not_grow_with_tokens():
    m = toy_model("llama")
    few = collect_importance(m, [toy_batch(m, (8,))], "flap", progress=False)
    many = collect_importance(m, [toy_batch(m, (64,) * 4, seed=s) for s in range(5)], "flap", progress=False)
    size = lambda imp: sum(t.numel() for t in imp.scores + imp.mean)
    assert size(few) == size(many) == 2 * 3 * 64

def test_save_load_roundtrip_and_checks(tmp_path, calib):
    m = toy_model(); imp = collect_importance(m, calib(m), "flap", progress=False)
    p = save_importance(imp, tmp_path / "s.safetensors")
    back = load_importance(p, model=m)
    assert back.metric == "flap" and back.meta["calibration"] == imp.meta["calibration"]
    assert all(torch.equal(a, b) for a, b in zip(imp.scores + imp.mean, back.scores + back.mean))
    with pytest.raises(LOPError, match="another model"): load_importance(p, model=toy_model(seed=1))
    with pytest.raises(LOPError, match="no importance file"): load_importance(tmp_path / "missing.safetensors")
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(LOPError, match="truncated or corrupt"): load_importance(p)

def test_calibration_fingerprint_tracks_the_data(calib):
    m = toy_model()
    a = collect_importance(m, calib(m, 2), progress=False).meta["calibration"]
    b = collect_importance(m, calib(m, 3), progress=False).meta["calibration"]
    assert a != b and a == collect_importance(m, calib(m, 2), progress=False).meta["calibration"]

@pytest.mark.parametrize("bad, msg", [("l1", "unknown importance metric"), ("L2 ", "unknown importance metric")])
def test_unknown_metric(bad, msg):
    with pytest.raises(LOPError, match=msg): collect_importance(toy_model(), [], bad)

def test_empty_calibration_is_refused():
    with pytest.raises(LOPError, match="calibration set is empty"): collect_importance(toy_model("llama"), [], progress=False)
