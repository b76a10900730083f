"Mixed precision: llama.cpp's quantiser, a dtype per tensor, and each layer's width and precision chosen together under a byte budget."
import json, os, sys, subprocess
from pathlib import Path
import numpy as np, pytest, torch
from gguf import GGUFReader, quants, GGMLQuantizationType as T
import lop.gguf as G
from lop.core import LOPError
from lop.models import find_ffns
from lop.targets import Counter
from lop.mixed import layer_dtypes, sensitivity, choose, prune_mixed, Sensitivity
from test_gguf import byte_bpe, tiny_llama

@pytest.fixture(scope="module")
def tok(): return byte_bpe()

@pytest.fixture(autouse=True)
def _threads():
    t = torch.get_num_threads(); torch.set_num_threads(1); yield; torch.set_num_threads(t)

def test_llama_cpp_s_quantiser_gives_gguf_s_blocks_and_refuses_what_it_cannot_hold():
    a = np.random.RandomState(0).randn(256, 128).astype(np.float32) * 0.02   # 256 rows: shared by 2 threads
    for t in (T.Q8_0, T.Q5_1, T.Q5_0, T.Q4_1, T.Q4_0):
        assert np.array_equal(G.quantize(a, t), quants.quantize(a, t)), t.name          # the same bytes as gguf's numpy port
    err = {t: np.abs(G.as_stored(a, t) - a).mean() for t in (T.Q4_0, T.IQ4_NL, T.Q8_0)}
    assert err[T.Q8_0] < err[T.IQ4_NL] < err[T.Q4_0]                                    # the non-linear grid beats Q4_0 at the same 4.5 bits
    torch.set_num_threads(2); two = G.quantize(a, T.IQ4_NL); torch.set_num_threads(1)
    assert np.array_equal(two, G.quantize(a, T.IQ4_NL))                                # rows split over threads: the same bytes
    with pytest.raises(LOPError, match="do not fill blocks of 32"): G.quantize(a[:, :100], T.Q4_0)
    with pytest.raises(LOPError, match="lop does not quantise to Q2_K"): G.quantize(a, T.Q2_K)

def test_a_mixed_file_runs_in_llama_cpp_and_is_the_size_counted(tmp_path, tok):
    m = tiny_llama()                                         # widths 64, 115, 32: 115 is off the blocks
    dtype = layer_dtypes(m, ["iq4_nl", "q8_0", "q4_1"], embedding="q4_0")
    rep = G.write_gguf(m, tmp_path/"m.gguf", tok, dtype=dtype)
    assert rep["ok"] and rep["rms_over_spread"] <= G.TOLERANCES["q4_0"], rep            # llama.cpp against torch with the file's weights
    types, shapes = G.file_types(tmp_path/"m.gguf"), G.gguf_shapes(m)
    assert types == {n: G.gguf_type(s, G.dtype_at(dtype, n)).name for n, s in shapes.items()}
    assert types["blk.0.ffn_up.weight"] == "IQ4_NL" and types["blk.1.ffn_down.weight"] == "F16" and types["blk.1.ffn_up.weight"] == "Q8_0"
    assert types["token_embd.weight"] == types["output.weight"] == "Q4_0" and types["blk.2.attn_norm.weight"] == "F32"
    size = os.path.getsize(tmp_path/"m.gguf")
    assert size == G.gguf_file_bytes(m, tok, dtype) == Counter(m, dtype, file="gguf", tokenizer=tok).dense
    r = GGUFReader(tmp_path/"m.gguf")                      # the file is named after the type most of its matrices hold
    assert int(r.fields["general.file_type"].contents()) == G._FILE_TYPE[G._file_dtype(dtype)]
    with pytest.raises(LOPError, match="misses 1 of its matrices"):
        G.write_gguf(m, tmp_path/"x.gguf", tok, dtype={k: v for k, v in dtype.items() if k != "blk.2.ffn_gate.weight"})
    with pytest.raises(LOPError, match="a mixed dtype maps tensor names to"): G.gguf_file_bytes(m, tok, {**dtype, "blk.0.ffn_up.weight": "q2_k"})
    with pytest.raises(LOPError, match="is a GGUF file's"): Counter(m, dtype)
    assert not (tmp_path/"x.gguf").exists()

def test_the_choice_is_exact_and_the_file_is_within_the_budget(tmp_path, tok):
    m = tiny_llama()
    scores = [torch.rand(f.width, generator=torch.Generator().manual_seed(i)) for i, f in enumerate(find_ffns(m))]
    windows = torch.tensor([tok(G.VERIFY_TEXT[:400]).input_ids[:48]])
    sens = sensitivity(m, scores, windows, ratios=(0.0, 0.5), dtypes=("q8_0", "q4_0"), embedding=("q8_0", "q4_0"), multiple_of=1, tokenizer=tok, progress=False)
    assert [len(l) for l in sens.layers] == [4, 4, 4] and all(o["kl"] >= 0 for l in sens.layers for o in l)
    lo = sens.fixed + min(e["bytes"] for e in sens.embedding) + sum(min(o["bytes"] for o in l) for l in sens.layers)
    hi = sens.fixed + max(e["bytes"] for e in sens.embedding) + sum(max(o["bytes"] for o in l) for l in sens.layers)
    lo += 3 * 256                                            # each layer's bytes are rounded up to the unit: at most 3 units lost
    assert choose(sens, hi, unit=256).kl <= choose(sens, (lo + hi) // 2, unit=256).kl <= choose(sens, lo, unit=256).kl
    with pytest.raises(LOPError, match="the smallest is"): choose(sens, lo - 3 * 256 - 1, unit=256)
    for budget in (hi, (lo + hi) // 2, lo):
        p = choose(sens, budget, unit=256)
        pm, dtype = prune_mixed(tiny_llama(), p, scores, multiple_of=1)
        assert [f.width for f in find_ffns(pm)] == p.kept
        rep = G.write_gguf(pm, tmp_path/"c.gguf", tok, dtype=dtype)
        assert rep["ok"] and os.path.getsize(tmp_path/"c.gguf") == p.bytes <= budget     # the plan's bytes are the file's
    assert p.ratios != [0.0] * 3                             # at the smallest budget, layers are pruned: other widths are refused
    with pytest.raises(LOPError, match="pass the scores and multiple_of"): prune_mixed(tiny_llama(), p, scores, multiple_of=32)
    sens.save(tmp_path/"s.json"); Sensitivity.load(tmp_path/"s.json").check_model(m)
    with pytest.raises(LOPError, match="measured on another model"): Sensitivity.load(tmp_path/"s.json").check_model(tiny_llama(seed=1))

@pytest.mark.parametrize("args, msg", [
    (["--target", "0.3", "--format", "gguf"], "--gguf-dtype auto chooses each layer's width and precision for a GGUF file of a --size"),
    (["--size", "5MB", "--format", "lop"], "--gguf-dtype auto chooses each layer's width and precision for a GGUF file of a --size"),
])
def test_the_command_line_refuses_auto_without_a_gguf_size(tmp_path, capsys, args, msg):
    from lop.cli import main
    assert main(["prune", "--model", "testbed", "--gguf-dtype", "auto", "--out", str(tmp_path/"x"), *args]) == 2
    assert msg in capsys.readouterr().err and not (tmp_path/"x").exists()

@pytest.mark.slow   # SmolLM2 (~1 min): a small table, then lop prune --gguf-dtype auto --size from the shell
def test_auto_from_the_command_line(tmp_path):
    from lop.load import load_model
    from lop.importance import load_importance
    from lop.ondemand import shipped_assets
    m, tok = load_model("smollm2-135m", device="cpu")
    scores = load_importance(shipped_assets(m)/"importance_l2.safetensors")
    ids = torch.tensor([tok(G.VERIFY_TEXT).input_ids[:32]])
    sensitivity(m, scores, ids, ratios=(0.0, 0.25), dtypes=("q4_0", "source"), embedding=("source", "q4_0"), progress=False).save(tmp_path/"s.json")
    lop = Path(sys.executable).with_name("lop")
    r = subprocess.run([str(lop), "prune", "--model", "smollm2-135m", "--size", "80MB", "--format", "gguf", "--gguf-dtype", "auto",
                        "--sensitivity", str(tmp_path/"s.json"), "--out", str(tmp_path/"a")], capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, OMP_NUM_THREADS="2"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "chosen in" in r.stdout and os.path.getsize(tmp_path/"a"/"model.gguf") <= 80_000_000
    man = json.loads((tmp_path/"a"/"lop.json").read_text())
    assert man["gguf"]["check"]["ok"] and set(man["gguf"]["dtype"].values()) <= {"q4_0", "source"}

def test_damaged_tables_and_flags_are_refused(tmp_path, tok, capsys):
    from lop.cli import main
    good = dict(ratio=0.0, dtype="q8_0", kept=4, bytes=100, kl=0.0)
    for layers, emb, what in (([[good]], [], "embedding"), ([[dict(good, kl=float("nan"))]], [dict(dtype="q8_0", bytes=10, kl=0.0)], "nan"),
                              ([[]], [dict(dtype="q8_0", bytes=10, kl=0.0)], "empty layer")):
        with pytest.raises(LOPError, match="the sensitivity table is damaged"): choose(Sensitivity(layers, emb, 10), 10_000)
    p = choose(Sensitivity([[good]], [dict(dtype="q8_0", bytes=10, kl=0.0)], 10), "100GB")     # a huge budget: the room is capped, no memory blow-up
    assert p.bytes == 120
    assert main(["prune", "--model", "testbed", "--target", "0.3", "--sensitivity", str(tmp_path/"s.json"), "--out", str(tmp_path/"x")]) == 2
    assert "--sensitivity is the cost table of --gguf-dtype auto" in capsys.readouterr().err
