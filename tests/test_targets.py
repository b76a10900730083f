"Pruning targets in the user's units: exact counts, inversions that round-trip, parsers, refusals, and latency bookkeeping (never the clock)."
import os, statistics, subprocess, sys
import numpy as np, pytest, torch
from hypothesis import given, settings, HealthCheck, strategies as st
from lop.core import LOPError
from lop.models import find_ffns
from lop.prune import make_plan, slice_ffn
from lop.toy import toy_model, TOY_KINDS
from lop.targets import *
from lop.targets import Counter, pruned_copy, _decreasing

M = toy_model("llama", layers=4, hidden=64, ffn=256)   # never pruned in place: tests prune copies that share its tensors
SKEW = lambda ts: np.clip(np.asarray(ts, dtype=np.float64)[:, None] * np.array([1.4, 1.2, 0.8, 0.6]), 0, 0.95)   # uneven, monotone

def _scores(m, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(f.width, generator=g) for f in find_ffns(m)]

def _sliced(m, ratios, multiple_of=1):
    return slice_ffn(pruned_copy(m), make_plan(_scores(m), ratios, multiple_of))

def _one_step(counter, kept, multiple_of):
    "What one rounding step (multiple_of neurons) more in every layer adds to the count: the tolerance of an inversion."
    k = np.asarray(kept)
    return sum(counter(np.where(np.arange(len(k)) == i, k + multiple_of, k)) - counter(k) for i in range(len(k)))

# --- counting ---

@pytest.mark.parametrize("kind", TOY_KINDS)
def test_counts_are_those_of_the_sliced_model(kind):
    m = toy_model(kind, layers=3, hidden=64, ffn=96)
    assert params_at(m, 0.0) == m.num_parameters()
    for ratios, k in ((0.3, 1), ([0.1, 0.55, 0.9], 1), (0.42, 32)):
        p = _sliced(m, ratios, k)
        plan = make_plan(_scores(m), ratios, k)
        assert params_at(m, ratios, k) == params_at(m, plan) == p.num_parameters() == stored(p)
        for d in DTYPES: assert size_at(m, ratios, d, k) == size_at(m, plan, d) == stored(p, d), (kind, d)
        assert params_at(m, ratios, k, part="language") == stored(p, part="language")

def test_tied_embeddings_count_once():
    m = toy_model("qwen2", layers=2, hidden=64, ffn=96)
    m.config.tie_word_embeddings = True; m.tie_weights()
    assert m.get_input_embeddings().weight is m.get_output_embeddings().weight
    p = _sliced(m, 0.25)
    assert params_at(m, 0.25) == p.num_parameters() and size_at(m, 0.25, "bf16") == 2 * p.num_parameters()

def test_q8_0_bytes():
    assert tensor_bytes((576, 1536), "q8_0") == 576 * 48 * 34
    assert tensor_bytes((576, 1075), "q8_0") == 576 * 1075 * 2   # rows off the blocks: the writer stores the matrix in f16
    assert tensor_bytes((576,), "q8_0") == 576 * 4               # vectors stay f32
    assert tensor_bytes((576,), "f16", file="gguf") == 576 * 4 and tensor_bytes((576,), "f16") == 576 * 2   # a GGUF file keeps vectors f32
    assert tensor_bytes((3, 5), "f16", file="gguf") == 32           # and pads every tensor to 32 bytes
    assert tensor_bytes((10, 3), "bf16") == 60 and tensor_bytes((10, 3), torch.float32) == 120
    with pytest.raises(LOPError, match="cannot count sizes in dtype"): tensor_bytes((3,), "int4")

# --- inversion ---

@given(st.floats(0.0, 0.95), st.sampled_from([None, "f32", "bf16", "f16", "q8_0"]), st.sampled_from([1, 8, 32]))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_inversion_reaches_within_one_neuron_per_layer(r, dtype, multiple_of):
    if dtype == "q8_0": multiple_of = 32   # off the blocks, ffn_down falls back to f16: the count jumps, and steps of 32 are what q8_0 is pruned in
    c = Counter(M, dtype)
    kept = kept_at(M, SKEW([r])[0], multiple_of)
    goal = c(kept) + int(r * 1000)   # a request between the plans
    if goal > c.dense: goal = c.dense
    kw = dict(params=goal) if dtype is None else dict(size=goal, dtype=dtype)
    g = find_target(M, allocate=SKEW, multiple_of=multiple_of, **kw)
    assert g.predicted <= goal < g.predicted + _one_step(c, g.kept, multiple_of)
    assert g.kept == kept_at(M, g.ratios, multiple_of) and c(g.kept) == g.predicted

@given(st.floats(0.0, 0.95), st.sampled_from([1, 16]))
@settings(max_examples=40, deadline=None)
def test_ratio_for_round_trips(r, multiple_of):
    goal = params_at(M, r, multiple_of)
    t = ratio_for(M, params=goal, multiple_of=multiple_of)
    assert t <= r + 1e-9 and params_at(M, t, multiple_of) == goal   # the smallest ratio with that count
    q = 32   # q8_0 in its blocks: off them ffn_down is stored in f16 and the count is not monotone in the ratio
    assert size_at(M, ratio_for(M, size=size_at(M, r, "q8_0", q), dtype="q8_0", multiple_of=q), "q8_0", q) == size_at(M, r, "q8_0", q)

def test_a_goal_is_met_by_the_model_pruned_there():
    for kw in (dict(params="200k"), dict(size="150kB", dtype="q8_0"), dict(size="400KiB", dtype="bf16")):
        g = find_target(M, allocate=SKEW, **kw)
        p = slice_ffn(pruned_copy(M), make_plan(_scores(M), g.ratios))
        reach(g, p)
        assert g.reached == g.predicted <= g.requested
        report = describe_goal(g)
        assert "asked:" in report and "reached:" in report and "how:" in report and f"{g.reached:,}" in report

# --- parsers ---

@pytest.mark.parametrize("fn, text, want", [
    (parse_params, "100M", 100_000_000), (parse_params, "1.5B", 1_500_000_000), (parse_params, "135,000,000", 135_000_000),
    (parse_params, "5e7", 50_000_000), (parse_params, "250k", 250_000), (parse_params, 42, 42),
    (parse_size, "200MB", 200_000_000), (parse_size, "200MiB", 200 * 2**20), (parse_size, "1.2 GB", 1_200_000_000),
    (parse_size, "3KiB", 3072), (parse_size, "512", 512), (parse_size, "1GiB", 2**30),
    (parse_latency, "8ms", 8.0), (parse_latency, "8 ms/token", 8.0), (parse_latency, "0.008s", 8.0), (parse_latency, "8000us", 8.0),
    (parse_latency, "8000µs", 8.0), (parse_latency, 8, 8.0)])
def test_parsers(fn, text, want):
    assert fn(text) == pytest.approx(want, rel=1e-12)

@pytest.mark.parametrize("fn, text", [(parse_params, ""), (parse_params, "M"), (parse_params, "100X"), (parse_params, "-5M"),
    (parse_params, "1,5M"), (parse_params, "nan"), (parse_params, "0"), (parse_size, "200 bananas"), (parse_size, "inf"),
    (parse_latency, "8"), (parse_latency, "8 parsecs"), (parse_latency, "-1ms"), (parse_params, None)])
def test_parsers_refuse_with_an_example(fn, text):
    with pytest.raises(LOPError, match="write it like"): fn(text)

# --- refusals ---

@pytest.mark.parametrize("kw, msg", [
    (dict(params=10**9), "above the dense model"),
    (dict(params="10k"), "below the model with no FFN at all"),
    (dict(size="1B", dtype="bf16"), "below the model with no FFN at all"),
    (dict(params="100k", size="1MB"), "exactly one target"),
    (dict(), "exactly one target"),
    (dict(params="100k", dtype="bf16"), "counts the bytes of a size target"),
    (dict(size="100kB", dtype="int3"), "cannot count sizes in dtype"),
])
def test_out_of_reach_targets_are_refused(kw, msg):
    with pytest.raises(LOPError, match=msg) as e: find_target(M, **kw)
    assert e.value.fix   # and say what to do

def test_below_the_smallest_reachable_names_it():
    c = Counter(M)
    with pytest.raises(LOPError, match="below the smallest model this allocation reaches") as e: find_target(M, params=c.no_ffn + 1)
    assert f"{c(kept_at(M, 0.95)):,}" in e.value.fix

# --- latency: the bookkeeping, not the clock ---

CURVE = LatencyCurve([0.0, 0.3, 0.6, 0.95], [4.0, 3.2, 2.5, 2.0], [9.0, 7.0, 5.5, 4.0], 4, 8, 2, 1, "cpu")

@given(st.floats(2.0, 3.999))
@settings(max_examples=50, deadline=None)
def test_a_latency_target_inverts_the_curve(ms):
    g = find_target(M, latency=ms, curve=CURVE)
    assert CURVE.ms_at(g.ratio) == pytest.approx(ms, rel=1e-9) and g.predicted == pytest.approx(ms, rel=1e-9)
    assert g.kept == kept_at(M, g.ratio)

def test_latency_refusals():
    with pytest.raises(LOPError, match="below the measured floor"): find_target(M, latency="1ms", curve=CURVE)
    with pytest.raises(LOPError, match="above the dense model"): find_target(M, latency="4ms", curve=CURVE)

def test_the_fit_is_monotone():
    assert _decreasing([5, 3, 4, 1]) == [5, 3.5, 3.5, 1]
    noisy = LatencyCurve([0, 0.25, 0.5, 0.75], [10.0, 11.0, 6.0, 7.0], [1] * 4, 1, 1, 1, 1, "cpu")
    f = noisy.fitted
    assert all(a >= b for a, b in zip(f, f[1:])) and noisy.ratio_at(noisy.ms_at(0.6)) <= 0.6 + 1e-12

def test_measured_latency_and_curve_record_how():
    m = toy_model("qwen2_5_vl", layers=2, hidden=64, ffn=256)
    lat = measure_latency(m, tokens=2, prompt=4, repeats=2, threads=1)
    assert lat.decode_ms > 0 and lat.prefill_ms > 0 and lat.threads == 1 and len(lat.decode_samples) == 2
    assert lat.decode_ms == statistics.median(lat.decode_samples) and lat.prefill_ms == statistics.median(lat.prefill_samples)
    c = latency_curve(m, ratios=(0, 0.5, 0.9), tokens=2, prompt=4, repeats=2, threads=1)
    assert c.ratios == [0, 0.5, 0.9] and len(c.decode_ms) == 3 and c.threads == 1
    assert c.fitted == sorted(c.fitted, reverse=True) and c.floor_ms <= c.dense_ms
    assert c.realised[0] == 0 and abs(c.realised[1] - 0.5) < 0.01
    assert [f.width for f in find_ffns(m)] == [256, 256]   # the copies never touch the model

def test_latency_goal_with_a_measured_pruned_model():
    g = find_target(M, latency="3ms", curve=CURVE)
    p = slice_ffn(pruned_copy(M), make_plan(_scores(M), g.ratios))
    reach(g, p)
    assert g.measured.decode_ms == g.reached > 0 and g.measured.tokens == CURVE.tokens and g.measured.threads == 1
    report = describe_goal(g)
    assert "measured:" in report and "floor 2.00 ms/token" in report and "dense 4.00" in report

# --- prune_to and the command line on the shipped testbed ---

@pytest.fixture(scope="module")
def testbed():
    from lop.load import load_model
    return load_model("testbed")[0]

def test_prune_to_params_size_and_latency(testbed):
    from lop.ondemand import prune_to
    per_layer = 3 * find_ffns(testbed)[0].hidden * len(find_ffns(testbed))
    goal = params_at(testbed, 0.3)
    m, info = prune_to(pruned_copy(testbed), params=goal)
    assert goal - per_layer < info["goal"].reached == m.num_parameters() == info["goal"].predicted <= goal
    text = f"{size_at(testbed, 0.3, 'bf16') / 1e6:.3f}MB"
    _, info = prune_to(pruned_copy(testbed), size=text, dtype="bf16")
    assert info["goal"].reached <= parse_size(text) and info["goal"].text == text
    _, info = prune_to(pruned_copy(testbed), latency=3.0, curve=CURVE, latency_kw=dict(threads=1))
    assert info["goal"].measured.threads == 1 and info["goal"].predicted == pytest.approx(3.0)
    with pytest.raises(LOPError, match="exactly one target"): prune_to(pruned_copy(testbed), 0.3, params="1M")
    with pytest.raises(LOPError, match="above the dense model"): prune_to(pruned_copy(testbed), params="1B")

def _lop(*args):
    return subprocess.run([sys.executable, "-c", "import sys; from lop.cli import main; sys.exit(main(sys.argv[1:]))", *args],
                          capture_output=True, text=True, timeout=600, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})

def test_cli_prune_to_a_parameter_budget(tmp_path, testbed):
    from lop.load import load_model
    goal = params_at(testbed, 0.4)
    r = _lop("prune", "--model", "testbed", "--params", f"{goal}", "--out", str(tmp_path/"p"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "asked:" in r.stdout and "reached:" in r.stdout and "how:" in r.stdout
    assert load_model(str(tmp_path/"p"))[0].num_parameters() <= goal

def test_cli_refuses_a_latency_out_of_reach(tmp_path):
    r = _lop("prune", "--model", "testbed", "--latency", "1us", "--threads", "1", "--out", str(tmp_path/"p"))
    assert r.returncode == 2 and "below the measured floor" in r.stderr and "fix:" in r.stderr
    assert not (tmp_path/"p").exists()

@pytest.mark.slow   # SmolLM2: the real model's counts, and a latency measured on it
def test_smollm2_targets():
    from lop.load import load_model
    from lop.ondemand import prune_to
    smol, _ = load_model("smollm2-135m", device="cpu")
    step = 3 * 576 * 30   # one neuron in each of the 30 layers
    for kw, step_ in ((dict(params="100M"), step), (dict(size="200MB", dtype="bf16"), 2 * step),
                      (dict(size="100MB", dtype="q8_0", multiple_of=32), 30 * 32 * (2 * 18 * 34 + 576 * 34 // 32))):
        m, info = prune_to(pruned_copy(smol), **kw)
        g = info["goal"]
        assert g.requested - step_ < g.reached == g.predicted <= g.requested, (kw, g.reached)
        assert g.reached == (m.num_parameters() if "params" in kw else stored(m, kw["dtype"]))
    curve = latency_curve(smol, tokens=8, prompt=16, repeats=2, threads=1)
    mid = (curve.dense_ms + curve.floor_ms) / 2
    if curve.dense_ms > curve.floor_ms:
        _, info = prune_to(pruned_copy(smol), latency=mid, curve=curve)
        g = info["goal"]
        assert g.predicted == pytest.approx(mid) and 0.5 * curve.floor_ms < g.measured.decode_ms < 2 * curve.dense_ms   # generous: the clock is shared


# --- a size in a GGUF file: the count is the file on disk ---

def test_latency_curves_must_be_sorted_from_zero():
    for ratios in ([0.3, 0, 0.6], [0.1, 0.3, 0.6], [0, 0.3, 0.3]):
        with pytest.raises(LOPError, match="must start at 0 .* and increase"): LatencyCurve(ratios, [4.0, 3.0, 2.0], [1] * 3, 1, 1, 1, 1, "cpu")
    with pytest.raises(LOPError, match="one decode time each"): LatencyCurve([0, 0.5], [4.0], [1], 1, 1, 1, 1, "cpu")

def test_sizes_parse_only_their_own_units():
    for bad in ("200MB/token", "8ms", "100M/tok"):
        with pytest.raises(LOPError, match="is not a size"): parse_size(bad)
    with pytest.raises(LOPError, match="is not a parameter count"): parse_params("100M/token")
    assert parse_latency("8 ms/token") == 8.0

@pytest.fixture(scope="module")
def llama_and_tokenizer():
    "A toy Llama at hidden 64 with a byte-level BPE tokenizer of its vocabulary (test_gguf's), for files llama.cpp runs."
    sys.path.insert(0, os.path.dirname(__file__))
    from test_gguf import byte_bpe
    import transformers as tf
    from lop.toy import toy_config
    cfg = toy_config("llama", layers=3, hidden=64, ffn=256); cfg.vocab_size = 320
    torch.manual_seed(0)
    return tf.LlamaForCausalLM(cfg).eval(), byte_bpe()

SKEW_3 = lambda ts: np.clip(np.asarray(ts, dtype=np.float64)[:, None] * np.array([1.3, 1.0, 0.7]), 0, 0.95)

@pytest.mark.parametrize("dtype,multiple_of", [("f32", 1), ("f16", 1), ("q8_0", 32), ("q8_0", 1), ("q4_1", 32), ("q5_0", 1)])
def test_a_gguf_size_is_the_file_on_disk(tmp_path, llama_and_tokenizer, dtype, multiple_of):
    "prune_to(size=, file='gguf') then save_pruned(format='gguf'): the file is at most the request, within 1 % of it, and exactly as counted."
    from lop.prune import save_pruned
    lm, tok = llama_and_tokenizer
    c = Counter(lm, dtype, file="gguf", tokenizer=tok)
    for share in (0.9, 0.75, 0.6):
        want = int(c.no_ffn + share * (c.dense - c.no_ffn))
        g = find_target(lm, size=want, dtype=dtype, file="gguf", tokenizer=tok, multiple_of=multiple_of, allocate=SKEW_3)
        m = slice_ffn(pruned_copy(lm), make_plan(_scores(lm), g.ratios, multiple_of))
        reach(g, m)
        out = save_pruned(m, tmp_path/f"{dtype}-{share}", tok, format="gguf", dtype=dtype)
        on_disk = os.path.getsize(out/"model.gguf")
        assert on_disk == g.predicted == g.reached, (on_disk, g.predicted)
        assert on_disk <= want, (on_disk, want)
        if dtype in ("f32", "f16"): assert on_disk > 0.99 * want, (on_disk, want)   # blocks: steps of 32 neurons (6.5 kB here) or f16 fallbacks

def test_a_source_size_is_the_file_on_disk(tmp_path, llama_and_tokenizer):
    "dtype='source' (each tensor on the grid of the file the model came from): counted before pruning, equal to the file written."
    from lop.gguf import write_gguf
    from lop.prune import save_pruned
    lm, tok = llama_and_tokenizer
    write_gguf(lm, tmp_path/"src.gguf", tok, "q4_1")
    lm.lop_gguf_source = str(tmp_path/"src.gguf")                       # as lop.load marks a model read from a GGUF file
    try:
        c = Counter(lm, "source", file="gguf")
        want = int(c.no_ffn + 0.7 * (c.dense - c.no_ffn))
        g = find_target(lm, size=want, dtype="source", file="gguf", multiple_of=32, allocate=SKEW_3)
        m = slice_ffn(pruned_copy(lm), make_plan(_scores(lm), g.ratios, 32))
        out = save_pruned(m, tmp_path/"s", format="gguf", dtype="source")
        assert os.path.getsize(out/"model.gguf") == g.predicted == reach(g, m).reached <= want
    finally: del lm.lop_gguf_source
