"Attention heads: plans that grouped attention allows, masked equals sliced on every family (Gemma-3's q/k norms included)."
import copy
import pytest, torch, transformers as tf
from hypothesis import given, settings, strategies as st
from lop.core import LOPError
from lop.toy import toy_model, toy_batch
from lop.heads import find_attentions, head_importance, make_head_plan, masked_heads, slice_heads

def tiny_gemma3():
    cfg = tf.Gemma3TextConfig(vocab_size=128, hidden_size=96, intermediate_size=96, num_hidden_layers=3, num_attention_heads=6,
                              num_key_value_heads=3, head_dim=16, max_position_embeddings=64, sliding_window=8, initializer_range=0.1)
    torch.manual_seed(0)
    return tf.Gemma3ForCausalLM(cfg).eval()

def _check(m, keep, x):
    atts = find_attentions(m)
    plan = make_head_plan(head_importance(m, [x], progress=False), [a.n_kv for a in atts], keep)
    with torch.no_grad():
        with masked_heads(m, plan): want = m(**x).logits
        s = slice_heads(copy.deepcopy(m), plan); got = s(**x).logits
    for a, (g, q) in zip(find_attentions(s), keep):
        assert (a.n_kv, a.n_heads, a.group, a.attn.num_key_value_groups) == (g, g * q, q, q)   # every kept group serves q query heads
    assert torch.allclose(got, want, atol=1e-4 * float(want.abs().max()))
    return s

def test_gemma3_keeps_its_q_k_norms():
    m = tiny_gemma3(); ids = torch.randint(0, 128, (2, 12))
    s = _check(m, [(1, 2), (3, 1), (2, 2)], dict(input_ids=ids))
    a = find_attentions(s)[0]
    assert a.attn.q_norm.weight.shape == (16,) and tuple(a.q.weight.shape) == (32, 96) and tuple(a.o.weight.shape) == (96, 32)
    assert s.config.lop_heads["heads"] == [2, 3, 4] and s.config.lop_heads["dense"] == [[6, 3]] * 3

@settings(max_examples=12, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 2), st.integers(1, 2)), min_size=3, max_size=3), st.sampled_from(["llama", "qwen2", "qwen2_5_vl"]))
def test_any_plan_keeps_grouped_attention_and_masked_equals_sliced(keep, kind):
    m = toy_model(kind)                                   # 4 query heads in 2 groups per layer
    _check(m, keep, toy_batch(m, (12, 9), seed=3))

def test_out_of_range_plans_are_refused():
    m = toy_model("llama"); hs = head_importance(m, [toy_batch(m, (12, 9), seed=0)], progress=False)
    with pytest.raises(LOPError, match="at least one head"): make_head_plan(hs, [2, 2, 2], [(1, 0), (2, 2), (2, 2)])
    with pytest.raises(LOPError, match="do not split into 3 groups"): make_head_plan(hs, [3, 2, 2], [(1, 1)] * 3)

@pytest.mark.parametrize("dtype", ["f32", "q8_0"])
def test_a_gguf_with_per_layer_heads_runs_in_llama_cpp(tmp_path, dtype):
    "deci reads per-layer head counts as arrays: the file's logits match the torch model's, its size is the one counted."
    import os
    from gguf import GGUFReader
    import lop.gguf as G
    from test_gguf import tiny_llama, byte_bpe
    m, tok = tiny_llama(), byte_bpe()                    # 4 query heads in 2 groups, FFN widths 64, 115, 32
    atts = find_attentions(m)
    slice_heads(m, make_head_plan(head_importance(m, [toy_batch(m, (12, 9), seed=0)], progress=False), [a.n_kv for a in atts], [(2, 1), (1, 2), (1, 1)]))
    rep = G.write_gguf(m, tmp_path/"h.gguf", tok, dtype=dtype)
    assert rep["ok"] and os.path.getsize(tmp_path/"h.gguf") == G.gguf_file_bytes(m, tok, dtype), rep
    f = GGUFReader(tmp_path/"h.gguf").fields
    assert list(f["deci.attention.head_count"].contents()) == [2, 2, 1] and list(f["deci.attention.head_count_kv"].contents()) == [2, 1, 1]
