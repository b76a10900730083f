import pytest, torch
from lop.features import backbone_inputs, backbone_logits, last_positions
from lop.importance import collect_importance
from lop.prune import make_plan, masked, slice_ffn
from lop.toy import toy_model, toy_batch, TOY_KINDS
from conftest import logits

@pytest.mark.parametrize("kind", TOY_KINDS)
def test_cached_image_features_give_the_same_logits(kind):
    m = toy_model(kind); x = toy_batch(m, (13, 9, 11), seed=2)
    cached = backbone_inputs(m, x)
    assert torch.equal(backbone_logits(m, cached), logits(m, x))
    pos = last_positions(x["attention_mask"])
    # the LM head on 3 gathered rows is a different GEMM than on all 3×13 rows: BLAS may round it differently (seen
    # on AVX-512 machines), so this one is equal to float32 rounding rather than bit for bit
    torch.testing.assert_close(backbone_logits(m, cached, pos), logits(m, x)[torch.arange(3), pos], rtol=0, atol=1e-6)

@pytest.mark.parametrize("kind", ["qwen2_5_vl", "qwen2_vl", "llava"])
def test_cached_inputs_serve_every_pruned_variant(kind, calib):
    m = toy_model(kind); x = toy_batch(m, (13, 9), seed=2)
    cached = backbone_inputs(m, x)
    imp = collect_importance(m, calib(m), progress=False)
    for ratios in (0.2, [0.6, 0.1, 0.4], 0.8):
        plan = make_plan(imp, ratios)
        with masked(m, plan): assert torch.equal(backbone_logits(m, cached), logits(m, x))
    slice_ffn(m, plan)
    assert torch.equal(backbone_logits(m, cached), logits(m, x))

def test_capture_skips_the_language_layers():
    m = toy_model("qwen2_5_vl"); x = toy_batch(m, (12,))
    calls = []
    h = m.model.language_model.layers[0].register_forward_hook(lambda *a: calls.append(1))
    backbone_inputs(m, x); h.remove()
    assert calls == []
