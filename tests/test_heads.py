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

@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3"])
def test_a_joint_plan_holds_exactly_its_parameters_on_every_family(family):
    "Counted, not estimated: Qwen2's q/k/v biases and Gemma-3's q/k norms included, the pruned model's parameters are the plan's."
    from lop.importance import collect_importance
    from lop.joint import joint_sensitivity, choose_joint, prune_joint
    m = tiny_gemma3() if family == "gemma3" else toy_model(family)
    vocab = m.get_input_embeddings().weight.shape[0]
    cal = [dict(input_ids=torch.randint(0, vocab, (4, 10), generator=torch.Generator().manual_seed(s))) for s in range(2)]
    sc, hs = collect_importance(m, cal, progress=False), head_importance(m, cal, progress=False)
    tab = joint_sensitivity(m, sc, hs, cal[0]["input_ids"], ratios=(0.0, 0.5), multiple_of=1, progress=False)
    assert tab.fixed + sum(f[0]["params"] + h[0]["params"] for f, h in zip(tab.ffn, tab.heads)) == m.num_parameters()
    plan = choose_joint(tab, int(0.75 * m.num_parameters()), unit=1)
    p = prune_joint(copy.deepcopy(m), plan, sc, hs, multiple_of=1)
    assert p.num_parameters() == plan.params <= 0.75 * m.num_parameters()
    with torch.no_grad(): assert torch.isfinite(p(**cal[1]).logits).all()

@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 6), st.floats(0, 5)), min_size=1, max_size=4), min_size=1, max_size=4), st.integers(-2, 20))
def test_the_knapsack_is_the_brute_force(groups, room):
    import itertools
    from lop.mixed import knapsack
    costs, values = [[c for c, _ in g] for g in groups], [[v for _, v in g] for g in groups]
    fits = [sum(v) for combo in itertools.product(*[list(zip(c, v)) for c, v in zip(costs, values)])
            for c, v in [zip(*combo)] if sum(c) <= room]
    got = knapsack(costs, values, room)
    if not fits: assert got is None
    else:
        assert got is not None and abs(got[0] - min(fits)) <= 1e-9 * max(1.0, min(fits))
        assert sum(c[j] for c, j in zip(costs, got[1])) <= room and abs(sum(v[j] for v, j in zip(values, got[1])) - got[0]) <= 1e-9 * max(1.0, got[0])

@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3"])
def test_an_hf_folder_with_pruned_heads_loads_without_lop(tmp_path, family):
    "Every layer's head counts in config.json's per-layer entries: plain transformers (a fresh process, no lop) and lop read the same logits."
    import os, subprocess, sys
    from lop.importance import collect_importance
    from lop.prune import make_plan, slice_ffn, save_pruned, load_pruned
    m = tiny_gemma3() if family == "gemma3" else toy_model(family)
    atts, vocab = find_attentions(m), m.get_input_embeddings().weight.shape[0]
    x = dict(input_ids=torch.randint(0, vocab, (2, 9), generator=torch.Generator().manual_seed(0)))
    slice_ffn(m, make_plan(collect_importance(m, [x], progress=False), 0.5))
    keep = [(1, a.group) if i == 0 else (a.n_kv, max(1, a.group - 1)) for i, a in enumerate(atts)]
    slice_heads(m, make_head_plan(head_importance(m, [x], progress=False), [a.n_kv for a in atts], keep))
    with torch.no_grad(): y = m(**x).logits
    d = save_pruned(m, tmp_path/"h", format="hf")
    with torch.no_grad(): assert torch.equal(load_pruned(d)(**x).logits, y)
    torch.save(x, tmp_path/"x.pt")
    child = (f"import sys, torch, transformers\nm = transformers.AutoModelForCausalLM.from_pretrained({str(d)!r}, trust_remote_code=True).eval()\n"
             f"assert 'lop' not in sys.modules\nwith torch.no_grad(): torch.save(m(**torch.load({str(tmp_path/'x.pt')!r})).logits, {str(tmp_path/'y.pt')!r})\n"
             "print([l.self_attn.q_proj.out_features for l in m.model.layers])")
    r = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, cwd=tmp_path,
                       env=dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path/"modules")))
    assert r.returncode == 0, r.stderr[-3000:]
    assert eval(r.stdout.strip().splitlines()[-1]) == [a.q.out_features for a in find_attentions(m)]
    assert torch.allclose(torch.load(tmp_path/"y.pt"), y, rtol=0, atol=1e-5 * float(y.abs().max()))   # another process: its own thread count

def test_prune_neurons_and_heads_from_the_command_line(tmp_path, capsys):
    "`lop prune --params P --heads`: the table measured once (reused by the next budget), the model within P, fewer heads, every format."
    import json, transformers as tf
    from lop.cli import main
    from lop.prune import save_pruned, load_pruned
    from test_gguf import byte_bpe
    tok = byte_bpe(); cfg = tf.LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                                          num_key_value_heads=2, max_position_embeddings=512, initializer_range=0.1)
    torch.manual_seed(0); save_pruned(tf.LlamaForCausalLM(cfg).eval(), tmp_path/"dense", tok)
    assert main(["importance", "--model", str(tmp_path/"dense"), "--n", "4", "--out", str(tmp_path/"s.safetensors")]) == 0
    dense = load_pruned(tmp_path/"dense").num_parameters()
    base = ["prune", "--model", str(tmp_path/"dense"), "--heads", "--scores", str(tmp_path/"s.safetensors"), "--multiple-of", "8"]
    assert main(base + ["--params", str(int(0.7 * dense)), "--out", str(tmp_path/"a")]) == 0
    assert "measuring the cost of every layer's neurons and heads" in capsys.readouterr().out
    m = load_pruned(tmp_path/"a")
    assert m.num_parameters() <= 0.7 * dense and sum(a.n_heads for a in find_attentions(m)) < 12
    assert main(base + ["--params", str(int(0.8 * dense)), "--out", str(tmp_path/"a"), "--format", "hf"]) == 0   # another budget, same table
    assert "joint table:" in capsys.readouterr().out and load_pruned(tmp_path/"a").num_parameters() <= 0.8 * dense
    assert main(base + ["--params", str(int(0.7 * dense)), "--out", str(tmp_path/"g"), "--format", "gguf", "--gguf-dtype", "f32"]) == 0
    assert json.loads((tmp_path/"g"/"lop.json").read_text())["gguf"]["check"]["ok"]
    from lop.targets import Counter
    full = Counter(load_pruned(tmp_path/"dense"), "q8_0", file="gguf", tokenizer=tok).dense
    size = int(0.75 * full)                           # a byte budget: the q8_0 file on disk, the same table
    assert main(base + ["--size", str(size), "--out", str(tmp_path/"s"), "--format", "gguf", "--gguf-dtype", "q8_0"]) == 0
    on_disk = (tmp_path/"s"/"model.gguf").stat().st_size
    assert 0.9 * size < on_disk <= size and json.loads((tmp_path/"s"/"lop.json").read_text())["gguf"]["check"]["ok"]
    assert main(base[:-2] + ["--target", "0.3", "--out", str(tmp_path/"b")]) == 2
    assert "--heads chooses neurons and heads for a parameter or byte budget" in capsys.readouterr().err

def test_prune_to_with_a_joint_table():
    "`prune_to(model, params=P, heads=table)`: the table's choice, its own head scores; a table of other scores, or another target, refused."
    from lop.importance import collect_importance
    from lop.joint import joint_sensitivity, JointTable
    from lop.ondemand import prune_to
    m = toy_model("llama", layers=3, hidden=32, ffn=64)
    cal = [toy_batch(m, (6, 10), image=False, seed=s) for s in range(2)]
    sc, hs = collect_importance(m, cal, progress=False), head_importance(m, cal, progress=False)
    tab = joint_sensitivity(m, sc, hs, cal[0]["input_ids"], ratios=(0.0, 0.5), multiple_of=1, progress=False)
    budget = int(0.7 * m.num_parameters())
    p, info = prune_to(copy.deepcopy(m), params=budget, scores=sc, heads=tab)
    assert p.num_parameters() == info["params"] <= budget and [(a.n_kv, a.group) for a in find_attentions(p)] == info["shapes"]
    with pytest.raises(LOPError, match="other neuron scores"): prune_to(copy.deepcopy(m), params=budget, scores=collect_importance(m, cal, "magnitude", progress=False), heads=tab)
    with pytest.raises(LOPError, match="parameter or byte budget"): prune_to(copy.deepcopy(m), 0.3, scores=sc, heads=tab)
    by_params = prune_to(copy.deepcopy(m), params=budget, scores=sc, heads=tab)[1]
    p, info = prune_to(copy.deepcopy(m), size=2 * budget, dtype="f16", scores=sc, heads=tab)   # the toy is f32; in f16 2 bytes a parameter
    assert p.num_parameters() <= budget and info["table_kl"] <= by_params["table_kl"] + 1e-12   # at least as good as the params= choice
    with pytest.raises(LOPError, match="the smallest counts"): prune_to(copy.deepcopy(m), size=1000, dtype="f16", scores=sc, heads=tab)
