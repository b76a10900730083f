"GGUF export: a pruned Llama at per-layer FFN widths runs in llama.cpp with the model's logits, or nothing is written."
import json, os
from pathlib import Path
import numpy as np, pytest, torch, transformers as tf
from gguf import GGUFReader
import lop.gguf as G
from lop.core import LOPError
from lop.toy import toy_config, toy_model, toy_batch
from lop.importance import collect_importance
from lop.prune import make_plan, slice_ffn, save_pruned, load_pruned
from lop.models import find_ffns

RATIOS = [0.5, 0.1, 0.75]

def byte_bpe(vocab_size=300):
    "A byte-level BPE tokenizer (GPT-2's kind) trained offline on Python's own documentation."
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
    from pydoc_data.topics import topics
    t = Tokenizer(models.BPE()); t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False); t.decoder = decoders.ByteLevel()
    t.train_from_iterator(list(topics.values())[:10], trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    return tf.PreTrainedTokenizerFast(tokenizer_object=t, bos_token="<s>", eos_token="</s>", pad_token="<pad>")

def tiny_llama(seed=0):
    "A tiny random Llama (GQA: 4 heads, 2 KV heads) with a 320-token vocabulary, pruned to three different FFN widths."
    cfg = toy_config("llama", layers=3, hidden=64, ffn=128); cfg.vocab_size, cfg.initializer_range = 320, 0.1   # attention that matters
    torch.manual_seed(seed)
    m = tf.LlamaForCausalLM(cfg).eval()
    calib = [toy_batch(m, (12, 9), image=False, seed=s) for s in range(2)]
    return slice_ffn(m, make_plan(collect_importance(m, calib, progress=False), RATIOS))

@pytest.fixture(scope="module")
def tok(): return byte_bpe()

@pytest.fixture(scope="module")
def pruned(): return tiny_llama()

@pytest.fixture(autouse=True)
def _threads():
    t = torch.get_num_threads(); torch.set_num_threads(1); yield; torch.set_num_threads(t)

def test_f32_runs_in_llama_cpp_at_the_plans_widths(tmp_path, pruned, tok):
    widths = [f.width for f in find_ffns(pruned)]
    assert len(set(widths)) == 3                           # three layers, three widths
    rep = G.write_gguf(pruned, tmp_path/"m.gguf", tok, dtype="f32")
    assert rep["tokens"] == G.VERIFY_TOKENS >= 128                   # the check reads 160 tokens of real prose
    assert rep["rms_over_spread"] < 1e-5 and rep["next_token_agreement"] == rep["tokens"]   # float32 both sides: rounding only (measured 5e-7)
    r = GGUFReader(tmp_path/"m.gguf")
    assert r.fields["general.architecture"].contents() == "deci"
    assert list(r.fields["deci.feed_forward_length"].contents()) == widths
    assert {t.name: list(t.shape) for t in r.tensors}["blk.2.ffn_down.weight"] == [widths[2], 64]   # ggml order: (in, out)
    ids = tok("def f(x): return x").input_ids
    a = G.gguf_logits(tmp_path/"m.gguf", ids)
    with torch.no_grad(): b = pruned(input_ids=torch.tensor([ids])).logits[0].numpy()
    assert np.abs(a - b).max() < 1e-3 * np.abs(b).max()       # float32 weights, and gguf_logits keeps llama.cpp's KV cache in f32

def test_tokenizer_and_chat_template_carry_over(tmp_path, pruned, tok):
    import llama_cpp
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    try: G.write_gguf(pruned, tmp_path/"m.gguf", tok, dtype="f32")
    finally: tok.chat_template = None
    llm = llama_cpp.Llama(str(tmp_path/"m.gguf"), n_ctx=64, verbose=False)
    text = "Return the value of x, 'as is' in 2024."
    assert llm.tokenize(text.encode(), add_bos=False) == tok(text).input_ids     # llama.cpp tokenises as the HF tokenizer does
    assert llm.metadata["tokenizer.chat_template"].startswith("{% for m")
    llm.close()

@pytest.mark.parametrize("dtype", ["f32", "f16", "q8_0", "q5_1", "q5_0", "q4_1", "iq4_nl", "q4_0"])
def test_every_tensor_is_stored_by_the_rule(tmp_path, pruned, tok, dtype):
    "The file holds every tensor in the type `gguf_type` names, with the values `stored_weights` rounds to, and is the size counted."
    from gguf import quants
    path = tmp_path/f"m.{dtype}.gguf"
    rep = G.write_gguf(pruned, path, tok, dtype=dtype)
    assert int(GGUFReader(path).fields["general.file_type"].contents()) == G._FILE_TYPE[dtype] and os.path.getsize(path) == G.gguf_file_bytes(pruned, tok, dtype)
    shapes, want = G.gguf_shapes(pruned), G.gguf_tensors(pruned)
    read = {t.name: t for t in GGUFReader(path).tensors}
    assert set(read) == set(shapes)
    for name, t in read.items():
        assert t.tensor_type == G.gguf_type(shapes[name], dtype), name
        got = quants.dequantize(t.data, t.tensor_type).reshape(shapes[name])
        w = want[name].numpy()
        exp = w if t.tensor_type.name == "F32" else w.astype(np.float16).astype(np.float32) if t.tensor_type.name == "F16" else \
            quants.dequantize((G.quantize if t.tensor_type.name == "IQ4_NL" else quants.quantize)(w, t.tensor_type), t.tensor_type)   # gguf's own quantiser where it has one
        assert np.array_equal(got, exp), name                     # the values the reference of verify_gguf runs with
    downs = [read[f"blk.{i}.ffn_down.weight"].tensor_type.name for i in range(3)]
    assert downs == ([dtype.upper()] * 3 if dtype in ("f32", "f16") else [dtype.upper(), "F16", dtype.upper()])   # widths 64, 115, 32: 115 is off the blocks

def test_a_file_llama_cpp_refuses_is_never_written(tmp_path, pruned, tok, monkeypatch):
    real = G.gguf_tensors
    def corrupt(model):                                   # one row short: llama.cpp's shape check refuses the file
        t = real(model); t["blk.1.ffn_gate.weight"] = t["blk.1.ffn_gate.weight"][:-1]; return t
    monkeypatch.setattr(G, "gguf_tensors", corrupt)
    with pytest.raises(LOPError, match="llama.cpp refuses"): G.write_gguf(pruned, tmp_path/"m.gguf", tok, dtype="f32")
    assert not (tmp_path/"m.gguf").exists() and not list(tmp_path.iterdir())    # no temporary file left either

@pytest.mark.parametrize("dtype", ["f32", "f16", "q8_0", "q4_0"])
def test_wrong_logits_are_never_written(tmp_path, pruned, tok, monkeypatch, dtype):
    monkeypatch.setattr(G, "rope_permute", lambda w, n: w)   # forget llama.cpp's Q/K row order: loads, but computes something else
    with pytest.raises(LOPError, match="differ") as e: G.write_gguf(pruned, tmp_path/"m.gguf", tok, dtype=dtype)
    assert float(str(e.value).split("RMS/spread ")[1].split()[0]) > 3 * G.TOLERANCES[dtype]   # far outside, in every dtype (measured 0.37)
    assert not list(tmp_path.iterdir())

def test_a_tokenizer_llama_cpp_reads_otherwise_is_never_written(tmp_path, pruned, tok, monkeypatch):
    from gguf import GGUFWriter
    real = G._build_tokenizer
    def fewer_merges(w, tokenizer, n_vocab):
        w.add_token_merges = lambda merges: GGUFWriter.add_token_merges(w, merges[:5])
        real(w, tokenizer, n_vocab)
    monkeypatch.setattr(G, "_build_tokenizer", fewer_merges)
    with pytest.raises(LOPError, match="tokenises the check text differently"): G.write_gguf(pruned, tmp_path/"m.gguf", tok, dtype="f32")
    assert not list(tmp_path.iterdir())

def test_types_lop_cannot_reproduce_and_broken_files_are_refused(tmp_path, pruned, tok, monkeypatch):
    "The check reads each tensor's type from the file and never guesses one: a type it cannot reproduce in torch is refused."
    G._write(pruned, tmp_path/"m.gguf", tok, "q8_0", None)
    monkeypatch.delitem(G.TOLERANCES, "q8_0")                       # as if Q8_0 were a K-quant
    with pytest.raises(LOPError, match="holds tensors in Q8_0, which lop does not write"): G.verify_gguf(tmp_path/"m.gguf", pruned, [1, 2, 3])
    (tmp_path/"cut.gguf").write_bytes((tmp_path/"m.gguf").read_bytes()[:3000])
    with pytest.raises(LOPError, match="cannot read the GGUF file"): G.file_types(tmp_path/"cut.gguf")

def test_source_keeps_every_tensor_on_its_source_grid(tmp_path, pruned, tok):
    "dtype='source': the types of the file the model came from, the kept rows of gate and up block for block, the size as counted."
    G.write_gguf(pruned, tmp_path/"src.gguf", tok, dtype="q5_1")
    half = slice_ffn(tiny_llama(), make_plan([torch.rand(w) for w in (64, 115, 32)], 0.5))   # the same weights, fewer neurons
    rep = G.write_gguf(half, tmp_path/"half.gguf", dtype="source", source=tmp_path/"src.gguf")
    S, O = ({t.name: t for t in GGUFReader(p).tensors} for p in (tmp_path/"src.gguf", tmp_path/"half.gguf"))
    for n, t in O.items():
        assert t.tensor_type == G.gguf_type(G.gguf_shapes(half)[n], "source", S[n].tensor_type), n
        if "ffn_down" not in n: assert {bytes(r) for r in np.asarray(t.data)} <= {bytes(r) for r in np.asarray(S[n].data)}, n
    assert rep["ok"] and os.path.getsize(tmp_path/"half.gguf") == G.gguf_file_bytes(half, dtype="source", source=tmp_path/"src.gguf")
    with pytest.raises(LOPError, match="the model came from none"): G.write_gguf(half, tmp_path/"x.gguf", tok, dtype="source")

@pytest.mark.parametrize("kind", ["qwen2", "qwen2_5_vl", "llava"])
def test_unsupported_architectures_say_what_works(tmp_path, kind):
    with pytest.raises(LOPError, match="format='hf'"): G.write_gguf(toy_model(kind), tmp_path/"m.gguf")
    assert not list(tmp_path.iterdir())

def test_bad_input(tmp_path, pruned, tok):
    with pytest.raises(LOPError, match="unknown GGUF dtype"): G.write_gguf(pruned, tmp_path/"m.gguf", tok, dtype="q4_k")
    with pytest.raises(LOPError, match="no tokenizer"): G.write_gguf(pruned, tmp_path/"m.gguf")
    with pytest.raises(LOPError, match="not a .gguf file"): G.write_gguf(pruned, tmp_path/"m.gguf", source=tmp_path/"x.bin")
    with pytest.raises(LOPError, match="unknown checkpoint format"): save_pruned(pruned, tmp_path/"p", tok, format="ggml")
    with pytest.raises(LOPError, match="dtype"): save_pruned(pruned, tmp_path/"p", tok, format="lop", dtype="f16")
    assert not list(tmp_path.iterdir())

def test_save_pruned_gguf_folder(tmp_path, pruned, tok):
    d = save_pruned(pruned, tmp_path/"p", tok, format="gguf", dtype="f32")
    man = json.loads((d/"lop.json").read_text())
    assert man["gguf"]["file"] == "model.gguf" and man["gguf"]["dtype"] == "f32" and man["gguf"]["check"]["ok"]
    assert list(GGUFReader(d/"model.gguf").fields["deci.feed_forward_length"].contents()) == man["ffn_widths"]
    back = load_pruned(d)                                  # the folder is also a lop checkpoint
    x = torch.tensor([tok("x = 1").input_ids])
    with torch.no_grad(): assert torch.equal(back(input_ids=x).logits, pruned(input_ids=x).logits)
    from lop.load import load_model
    m, _ = load_model(str(d), device="cpu")
    assert Path(m.lop_gguf) == d/"model.gguf"

@pytest.mark.slow   # SmolLM2-135M (~1 min): pruned to 30 % by lop's predictor, every dtype checked in llama.cpp
def test_smollm2_pruned_to_30_percent(tmp_path):
    from lop.load import load_model
    from lop.ondemand import prune_to
    model, tok = load_model("smollm2-135m", device="cpu")
    prune_to(model, 0.3)
    widths = [f.width for f in find_ffns(model)]
    assert len(set(widths)) > 1
    for dtype in G.DTYPES:
        rep = G.write_gguf(model, tmp_path/f"s.{dtype}.gguf", dtype=dtype)     # tokenizer copied from the source GGUF
        # near ties may flip (llama.cpp rounds activations to 8 bits in its dot products; q8_0 measured 155 of 160, iq4_nl 151);
        # a clear lead (over 4 x the RMS difference) may not: every dtype measured all of them, over half the tokens
        assert rep["ok"] and rep["clear_agreement"] == rep["clear_tokens"] >= rep["tokens"] // 3, rep
        assert rep["next_token_agreement"] >= 0.9 * rep["tokens"], rep
        assert list(GGUFReader(tmp_path/f"s.{dtype}.gguf").fields["deci.feed_forward_length"].contents()) == widths

@pytest.mark.parametrize("args, msg", [
    (["--gguf-dtype", "q8_0"], "--gguf-dtype is for --format gguf"),
    (["--format", "gguf", "--gguf-dtype", "f16", "--dtype", "bf16"], "--dtype bf16 and --gguf-dtype f16 disagree"),
    (["--format", "gguf", "--gguf-dtype", "q4_k"], "invalid choice"),
    (["--format", "lop", "--dtype", "q8_0"], "invalid choice"),
])
def test_the_command_line_refuses_mixed_dtypes(tmp_path, capsys, args, msg):
    from lop.cli import main
    assert main(["prune", "--model", "testbed", "--size", "5MB", "--out", str(tmp_path/"x"), *args]) == 2
    assert msg in capsys.readouterr().err and not (tmp_path/"x").exists()

@pytest.mark.slow   # the user path: lop prune --format gguf on SmolLM2, then the folder loads in lop and the file in llama.cpp
def test_prune_to_gguf_from_the_command_line(tmp_path):
    import subprocess, sys, llama_cpp
    from lop.load import load_model
    lop = Path(sys.executable).with_name("lop")
    r = subprocess.run([str(lop), "prune", "--model", "smollm2-135m", "--target", "0.3", "--out", str(tmp_path/"s30"), "--format", "gguf",
                        "--gguf-dtype", "q8_0"], capture_output=True, text=True, timeout=900, env=dict(os.environ, OMP_NUM_THREADS="2"))
    assert r.returncode == 0, r.stderr[-3000:]
    man = json.loads((tmp_path/"s30"/"lop.json").read_text())
    assert man["gguf"]["dtype"] == "q8_0" and man["gguf"]["check"]["ok"]
    m, tok = load_model(str(tmp_path/"s30"), device="cpu")
    assert m.lop_gguf == str(tmp_path/"s30"/"model.gguf")
    llm = llama_cpp.Llama(m.lop_gguf, n_ctx=128, verbose=False)
    out = llm.create_chat_completion([{"role": "user", "content": "What is the capital of France?"}], max_tokens=8, temperature=0)
    assert out["choices"][0]["message"]["content"].strip()
    llm.close()

def test_flap_bias_compensation_is_carried(tmp_path, tok):
    "FLAP's compensation puts a bias on down_proj: deci reads it as ffn_down.bias."
    cfg = toy_config("llama", layers=3, hidden=64, ffn=128); cfg.vocab_size, cfg.initializer_range = 320, 0.1
    torch.manual_seed(1); m = tf.LlamaForCausalLM(cfg).eval()
    flap = collect_importance(m, [toy_batch(m, (12, 9), image=False, seed=s) for s in range(2)], "flap", progress=False)
    slice_ffn(m, make_plan(flap, RATIOS), compensate=flap)
    assert all(f.down.bias is not None for f in find_ffns(m))
    rep = G.write_gguf(m, tmp_path/"m.gguf", tok, dtype="f32")
    assert rep["ok"] and "blk.0.ffn_down.bias" in {t.name for t in GGUFReader(tmp_path/"m.gguf").tensors}

def test_tokenizers_lop_cannot_carry_are_refused(tmp_path, pruned, tok):
    from lop.load import load_model, gguf_path
    _, word = load_model("testbed")                                   # a word-level tokenizer: no llama.cpp pre-tokenizer matches it
    with pytest.raises(LOPError, match="is not a plain byte-level BPE tokenizer"): G.write_gguf(pruned, tmp_path/"m.gguf", getattr(word, "tokenizer", word))
    with pytest.raises(LOPError, match="has 49152 tokens, the model's embedding 320 rows"):
        G.write_gguf(pruned, tmp_path/"m.gguf", source=gguf_path("smollm2-135m"))   # another model's vocabulary
    small = tiny_llama(); small.resize_token_embeddings(200)
    with pytest.raises(LOPError, match="the tokenizer has ids up to 299, the model's embedding 200 rows"): G.write_gguf(small, tmp_path/"m.gguf", tok)
    assert not list(tmp_path.iterdir())

def test_rope_that_lop_does_not_write_is_refused(tmp_path, tok):
    for rope, msg in ((dict(rope_type="linear", factor=2.0, rope_theta=1e4), "rope scaling 'linear'"), (dict(rope_type="default"), "no usable rope_theta")):
        m = tiny_llama(); m.config.rope_parameters = rope
        with pytest.raises(LOPError, match=msg): G.write_gguf(m, tmp_path/"m.gguf", tok)
    assert not list(tmp_path.iterdir())

@pytest.mark.parametrize("model_dtype", [torch.bfloat16, torch.float16])
def test_a_half_precision_model_exports_and_checks(tmp_path, tok, model_dtype):
    "The check runs the reference in float32 with the file's weights and the rope the file states: a bf16 or f16 model passes in every dtype."
    m = tiny_llama().to(model_dtype)
    for dtype in ("f32", "f16", "q8_0"):
        rep = G.write_gguf(m, tmp_path/f"m.{dtype}.gguf", tok, dtype=dtype)
        assert rep["ok"] and rep["rms_over_spread"] < G.TOLERANCES[dtype] / 5, (model_dtype, dtype, rep["rms_over_spread"])

def test_perplexity_and_quantiser_refuse_bad_input(tmp_path, pruned, tok):
    G.write_gguf(pruned, tmp_path/"m.gguf", tok, dtype="f16")
    with pytest.raises(LOPError, match="token ids lie outside the file's vocabulary of 320"): G.gguf_perplexity(tmp_path/"m.gguf", torch.tensor([[1, 2, 999]]))
    with pytest.raises(LOPError, match="must hold integer token ids"): G.gguf_perplexity(tmp_path/"m.gguf", torch.tensor([[1.0, 2.0]]))
    (tmp_path/"junk.gguf").write_bytes(b"GGUF" + b"\0" * 100)
    G.open_llama(tmp_path/"m.gguf").close()                         # llama.cpp's log quieted once: its reason must still come through
    with pytest.raises(LOPError, match="failed to read header"): G.llama_quantize(tmp_path/"junk.gguf", tmp_path/"q.gguf", "q4_0")
    with pytest.raises(LOPError, match="the model came from none"): G.gguf_file_bytes(pruned, tok, "source")
    with pytest.raises(LOPError, match="damaged or truncated"): G.write_gguf(pruned, tmp_path/"x.gguf", source=tmp_path/"junk.gguf")
    assert not (tmp_path/"q.gguf").exists() and not (tmp_path/"x.gguf").exists()
