import json, math, pytest, torch
from hypothesis import given, settings, strategies as st
from lop.core import LOPError
from lop.importance import collect_importance
from lop.models import find_ffns, model_stats
from lop.prune import make_plan, kept_width, validate_ratios, masked, slice_ffn, save_pruned, load_pruned, Plan
from lop.toy import toy_model, toy_batch, TOY_KINDS
from conftest import logits

RATIOS = [0.5, 0.25, 0.8]

@pytest.mark.parametrize("kind", TOY_KINDS)
def test_ratio_zero_is_bitwise_dense(kind, calib):
    m = toy_model(kind); x = toy_batch(m, (11, 8), seed=7)
    dense = logits(m, x)
    plan = make_plan(collect_importance(m, calib(m), progress=False), 0.0)
    with masked(m, plan): assert torch.equal(logits(m, x), dense)
    slice_ffn(m, plan)
    assert torch.equal(logits(m, x), dense)

@pytest.mark.parametrize("kind", TOY_KINDS)
@pytest.mark.parametrize("metric", ["l2", "flap"])
def test_masked_equals_sliced(kind, metric, calib):
    m = toy_model(kind); x = toy_batch(m, (11, 8), seed=7)
    imp = collect_importance(m, calib(m), metric, progress=False)
    comp = imp if metric == "flap" else None
    plan = make_plan(imp, RATIOS)
    dense = logits(m, x)
    with masked(m, plan, compensate=comp): y_masked = logits(m, x)
    assert torch.equal(logits(m, x), dense), "leaving masked() must restore the dense model exactly"
    assert not torch.allclose(y_masked, dense), "pruning half the neurons must change the outputs"
    slice_ffn(m, plan, compensate=comp)
    torch.testing.assert_close(logits(m, x), y_masked, rtol=0, atol=1e-5)
    assert [f.width for f in find_ffns(m)] == [32, 48, 13]

def test_masked_is_reversible_after_an_error(calib):
    m = toy_model(); x = toy_batch(m, (9,)); dense = logits(m, x)
    plan = make_plan(collect_importance(m, calib(m), progress=False), RATIOS)
    with pytest.raises(RuntimeError):
        with masked(m, plan): raise RuntimeError("boom")
    assert torch.equal(logits(m, x), dense)
    with masked(m, plan):
        with pytest.raises(LOPError, match="already masked"):
            with masked(m, plan): pass

def test_bias_compensation_needs_means(calib):
    m = toy_model(); imp = collect_importance(m, calib(m), "l2", progress=False)
    with pytest.raises(LOPError, match="mean activations"): slice_ffn(m, make_plan(imp, 0.5), compensate=imp)

def test_flap_compensation_adds_the_mean_contribution(calib):
    m = toy_model("llama"); imp = collect_importance(m, calib(m), "flap", progress=False)
    plan = make_plan(imp, RATIOS)
    d0 = find_ffns(m)[0].down.weight.detach().clone()
    slice_ffn(m, plan, compensate=imp)
    removed = sorted(set(range(64)) - set(plan.keep[0].tolist()))
    torch.testing.assert_close(find_ffns(m)[0].down.bias, d0[:, removed] @ imp.mean[0][removed])

@pytest.mark.parametrize("kind", ["qwen2_5_vl", "llava", "qwen2"])
@pytest.mark.parametrize("compensate", [False, True])
def test_param_count_after_slicing_matches_formula(kind, compensate, calib):
    m = toy_model(kind); imp = collect_importance(m, calib(m), "flap", progress=False)
    before = model_stats(m); plan = make_plan(imp, RATIOS)
    slice_ffn(m, plan, compensate=imp if compensate else None)
    after = model_stats(m)
    hidden, removed = 32, sum(w - k for w, k in zip(plan.widths, plan.kept))
    expect = before["total_params"] - removed * 3 * hidden + (3 * hidden if compensate else 0)
    assert after["total_params"] == expect == sum(p.numel() for p in m.parameters())
    assert after["ffn_params"] == sum(3 * hidden * k for k in plan.kept) + (3 * hidden if compensate else 0)
    assert after["ffn_flops"] == 2 * 3 * hidden * sum(plan.kept)

@pytest.mark.parametrize("kind", TOY_KINDS)
def test_save_load_roundtrip(kind, tmp_path, calib):
    m = toy_model(kind); imp = collect_importance(m, calib(m), "flap", progress=False)
    slice_ffn(m, make_plan(imp, RATIOS), compensate=imp)
    x = toy_batch(m, (10, 7), seed=3)
    save_pruned(m, tmp_path / "ck")
    m2 = load_pruned(tmp_path / "ck")
    assert type(m2) is type(m)
    assert torch.equal(logits(m2, x), logits(m, x))
    assert [f.width for f in find_ffns(m2)] == [32, 48, 13]
    assert m2.config.lop_pruning["ffn_widths"] == [32, 48, 13]

def test_tied_embeddings_stay_tied(tmp_path, calib):
    m = toy_model("llama"); m.config.tie_word_embeddings = True; m.tie_weights()
    assert m.lm_head.weight is m.model.embed_tokens.weight
    slice_ffn(m, make_plan(collect_importance(m, calib(m), progress=False), 0.5))
    m2 = load_pruned(save_pruned(m, tmp_path / "ck"))
    assert m2.lm_head.weight is m2.model.embed_tokens.weight
    assert sum(p.numel() for p in m2.parameters()) == sum(p.numel() for p in m.parameters())

def test_save_overwrites_atomically(tmp_path, calib):
    m = toy_model("llama"); p = tmp_path / "ck"
    save_pruned(m, p)
    slice_ffn(m, make_plan(collect_importance(m, calib(m), progress=False), 0.5))
    save_pruned(m, p)
    assert [f.width for f in find_ffns(load_pruned(p))] == [32, 32, 32]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["ck"]

def test_corrupt_checkpoints_are_refused(tmp_path):
    m = toy_model("llama"); p = save_pruned(m, tmp_path / "ck")
    with pytest.raises(LOPError, match="not a lop checkpoint"): load_pruned(tmp_path / "nothing")
    w = p / "model.safetensors"; data = bytearray(w.read_bytes())
    data[-10] ^= 0xFF; w.write_bytes(bytes(data))
    with pytest.raises(LOPError, match="checksum"): load_pruned(p)
    w.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(LOPError, match="checksum"): load_pruned(p)
    (p / "lop.json").write_text("{not json")
    with pytest.raises(LOPError, match="corrupt"): load_pruned(p)

def test_plan_from_other_model_is_refused(calib):
    m = toy_model(); plan = make_plan(collect_importance(m, calib(m), progress=False), 0.5)
    other = toy_model(layers=4)
    with pytest.raises(LOPError, match="3 layers, the model 4"): slice_ffn(other, plan)
    slice_ffn(m, plan)
    with pytest.raises(LOPError, match="widths"): slice_ffn(m, plan)  # already pruned: needs its own scores

def test_pruning_a_pruned_model_again(calib):
    m = toy_model("qwen2"); x = toy_batch(m, (9,))
    slice_ffn(m, make_plan(collect_importance(m, calib(m), progress=False), 0.25))
    imp2 = collect_importance(m, calib(m), progress=False)
    assert imp2.widths == [48, 48, 48]
    plan2 = make_plan(imp2, 0.5)
    with masked(m, plan2): y = logits(m, x)
    slice_ffn(m, plan2)
    torch.testing.assert_close(logits(m, x), y, rtol=0, atol=1e-5)
    assert m.config.lop_pruning["dense_widths"] == [64, 64, 64] and m.config.lop_pruning["ffn_widths"] == [24, 24, 24]

@pytest.mark.parametrize("bad, msg", [
    ([0.1, 0.2], "got 2 ratios"), ([0.1, float("nan"), 0.2], "finite"), ([0.1, float("inf"), 0.2], "finite"),
    ([0.1, -0.01, 0.2], r"\[0, 1\)"), ([0.1, 1.0, 0.2], r"\[0, 1\)"), (1.5, r"\[0, 1\)"), (["a", 0, 0], "must be numbers")])
def test_bad_ratios(bad, msg):
    with pytest.raises(LOPError, match=msg): validate_ratios(bad, 3)

def test_nan_scores_are_refused():
    with pytest.raises(LOPError, match="NaN"): make_plan([torch.tensor([1.0, float("nan")])], 0.5)

@settings(max_examples=200, deadline=None)
@given(width=st.integers(1, 5000), ratio=st.floats(0, 1, exclude_max=True), m=st.sampled_from([1, 8, 64, 128]))
def test_kept_width_rule(width, ratio, m):
    k = kept_width(width, ratio, m)
    assert 1 <= k <= width
    if m == 1:
        assert k == max(1, width - math.floor(ratio * width + 0.5))
        assert abs((1 - k / width) - ratio) <= 0.5 / width + 1e-12 or k == 1
    elif width >= m: assert k % m == 0 or k == width

@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=40), min_size=1, max_size=5), st.data())
def test_plan_keeps_the_highest_scores(scores, data):
    ratios = data.draw(st.lists(st.floats(0, 0.999), min_size=len(scores), max_size=len(scores)))
    plan = make_plan([torch.tensor(s) for s in scores], ratios)
    for s, keep, r in zip(scores, plan.keep, ratios):
        s = torch.tensor(s, dtype=torch.float32)
        assert len(keep) == kept_width(len(s), r) and keep.tolist() == sorted(set(keep.tolist()))
        dropped = torch.ones(len(s), dtype=torch.bool); dropped[keep] = False
        if dropped.any(): assert s[keep].min() >= s[dropped].max()
    back = Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert all(torch.equal(a, b) for a, b in zip(back.keep, plan.keep))
