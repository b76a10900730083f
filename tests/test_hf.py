"Pruned checkpoints for plain transformers (lop.hf): every family, the testbed and SmolLM2 load in a fresh interpreter that never imports lop, and compute what the pruned model computes."
import json, os, shutil, subprocess, sys
from pathlib import Path
import pytest, torch, transformers as tf
from lop.cli import main
from lop.core import LOPError
from lop.evaluate import encode_items
from lop.importance import collect_importance
from lop.models import find_ffns
from lop.ondemand import prune_to
from lop.prune import make_plan, slice_ffn, save_pruned, load_pruned
from lop.synthvqa import make_split
from lop.testbed import load_testbed
from lop.toy import toy_model, toy_batch, toy_sample, TOY_KINDS
from conftest import one_thread

RATIOS = [0.5, 0.25, 0.8]                       # non-uniform: widths 32, 48, 13 of 64
FAMILIES = TOY_KINDS + ("gemma2", "gemma3")
AUTO = dict(qwen2_5_vl="AutoModelForImageTextToText", qwen2_vl="AutoModelForImageTextToText", llava="AutoModelForImageTextToText")

def tiny(kind:str, seed:int=0):
    "A tiny random model of `kind`: lop.toy's families, and Gemma 2 / Gemma 3 text at the same size."
    if kind in TOY_KINDS: return toy_model(kind, seed=seed)
    kw = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
              vocab_size=128, max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    config = tf.Gemma2Config(**kw) if kind == "gemma2" else tf.Gemma3TextConfig(**kw)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return tf.AutoModelForCausalLM.from_config(config).eval()

def pruned(kind:str):
    "`tiny(kind)` pruned by RATIOS with FLAP bias compensation (so `down_proj` gains a bias)."
    m = tiny(kind)
    imp = collect_importance(m, [toy_batch(m, (12, 9), seed=100 + s) for s in range(3)], "flap", progress=False)
    return slice_ffn(m, make_plan(imp, RATIOS), compensate=imp)

# The fresh interpreter: it loads every folder with plain transformers, asserts lop was never imported, and writes
# logits, generated tokens (and, where asked, what the saved tokenizer/image processor encode) for the parent to compare.
CHILD = r'''
import json, sys, torch, transformers
from PIL import Image
for job in json.loads(sys.argv[1]):
    try:
        trust = dict(trust_remote_code=True) if job.get("trust", True) else {}
        model = getattr(transformers, job["auto"]).from_pretrained(job["dir"], **trust).eval()
    except Exception as e:
        torch.save(dict(error=f"{type(e).__name__}: {e}"), job["out"]); continue
    assert "lop" not in sys.modules, "loading the folder imported lop"
    x, res = torch.load(job["in"]), dict(cls=type(model).__name__, module=type(model).__module__)
    if job.get("question"):    # encode it with the processor's parts saved in the folder, as the testbed's processor does
        tok = transformers.AutoTokenizer.from_pretrained(job["dir"])
        ip = transformers.AutoImageProcessor.from_pretrained(job["dir"])
        vis = ip(images=[Image.open(job["image"])], return_tensors="pt")
        n = int(vis["image_grid_thw"].prod()) // ip.merge_size ** 2
        ids = tok([job["question"].replace("<|image_pad|>", "<|image_pad|>" * n)], return_tensors="pt", add_special_tokens=False)
        res["input_ids"] = ids["input_ids"]
        x["generate"] = dict(vis, input_ids=ids["input_ids"], attention_mask=ids["attention_mask"],
                             mm_token_type_ids=(ids["input_ids"] == tok.convert_tokens_to_ids("<|image_pad|>")).long())
    if job.get("text"):        # encode it with the tokenizer saved in the folder
        x["generate"] = dict(transformers.AutoTokenizer.from_pretrained(job["dir"])(job["text"], return_tensors="pt"))
        res["input_ids"] = x["generate"]["input_ids"]
    with torch.no_grad():
        res["logits"] = model(**x["batch"]).logits
        if "generate" in x: res["tokens"] = model.generate(**x["generate"], max_new_tokens=job["new_tokens"], do_sample=False)
    if job.get("resave"):      # transformers' own save_pretrained of the loaded model loads again
        model.save_pretrained(job["dir"] + "-resaved")
        again = getattr(transformers, job["auto"]).from_pretrained(job["dir"] + "-resaved", trust_remote_code=True).eval()
        with torch.no_grad(): res["resaved_logits"] = again(**x["batch"]).logits
    torch.save(res, job["out"])
assert "lop" not in sys.modules
'''

def without_lop(jobs:list, tmp:Path) -> list[dict]:
    "Run `jobs` in one fresh interpreter that never imports lop (its own transformers module cache); return their outputs."
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", HF_MODULES_CACHE=str(tmp/"hf-modules"))
    r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(jobs)], capture_output=True, text=True, env=env, cwd=tmp, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    return [torch.load(j["out"]) for j in jobs]

def job(name:str, folder:Path, auto:str, inputs:dict, **kw) -> dict:
    "What the fresh interpreter does with `folder`: load it with `auto`, run `inputs` (saved beside it as `name`.in.pt)."
    torch.save(inputs, folder.parent/f"{name}.in.pt")
    return dict(dir=str(folder), auto=auto, **{"in": str(folder.parent/f"{name}.in.pt")}, out=str(folder.parent/f"{name}.out.pt"), **kw)

def expected(m, x:dict, gen:dict|None=None, new_tokens:int=4) -> dict:
    "What `m` computes, on one thread as the fresh interpreter does (like for like: two threads sum in another order, last-bit changes)."
    with one_thread(), torch.no_grad():
        return dict(logits=m(**x).logits, tokens=None if gen is None else m.generate(**gen, max_new_tokens=new_tokens, do_sample=False))

def widened(folder:Path, to:Path, layer:int=1, width:int=40) -> Path:
    "A copy of `folder` whose config gives `layer` a width its weights do not have."
    shutil.copytree(folder, to)
    cfg = json.loads((to/"config.json").read_text())
    (cfg.get("text_config") or cfg)["per_layer_config"][str(layer)]["intermediate_size"] = width
    (to/"config.json").write_text(json.dumps(cfg))
    return to

@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """Every family pruned non-uniformly, two dense models, the testbed at 30 % (with its processor) and two broken
    folders, saved with format="hf" and loaded in ONE fresh interpreter without lop: {name: (expected, got, folder)}."""
    tmp = tmp_path_factory.mktemp("hf")
    jobs, want = {}, {}
    for kind in FAMILIES:
        m = pruned(kind)
        d = save_pruned(m, tmp/kind, format="hf")
        x, s = toy_batch(m, (10, 7), seed=3), toy_sample(m, 9, seed=4)
        want[kind] = expected(m, x, s)
        jobs[kind] = job(kind, d, AUTO.get(kind, "AutoModelForCausalLM"), dict(batch=x, generate=s), new_tokens=4, resave=True)
    for kind in ("llama", "qwen2_5_vl"):
        m = tiny(kind, seed=1)
        d = save_pruned(m, tmp/f"dense-{kind}", format="hf")
        x = toy_batch(m, (10, 7), seed=3)
        want[f"dense-{kind}"] = expected(m, x)
        jobs[f"dense-{kind}"] = job(f"dense-{kind}", d, AUTO.get(kind, "AutoModelForCausalLM"), dict(batch=x))
    m, proc = load_testbed(); prune_to(m, 0.3)
    d = save_pruned(m, tmp/"testbed", proc, format="hf")
    item = make_split("test", 1, seed=0)[0]
    q = proc.prompt(item["question"]); item["image"].save(tmp/"question.png")
    b = encode_items(proc, [item], with_answer=False)[0]
    want["testbed"] = dict(expected(m, b, b, new_tokens=3), input_ids=b["input_ids"], model=m, processor=proc)
    jobs["testbed"] = job("testbed", d, "AutoModelForImageTextToText", dict(batch=b), question=q, image=str(tmp/"question.png"), new_tokens=3)
    jobs["edited-causal"] = job("edited-causal", widened(tmp/"llama", tmp/"edited-llama"), "AutoModelForCausalLM", {})
    jobs["edited-vl"] = job("edited-vl", widened(tmp/"qwen2_5_vl", tmp/"edited-qwen2_5_vl"), "AutoModelForImageTextToText", {})
    jobs["stock"] = job("stock", tmp/"llama", "AutoModelForCausalLM", {}, trust=False)
    got = dict(zip(jobs, without_lop(list(jobs.values()), tmp)))
    return {k: (want.get(k), got[k], Path(jobs[k]["dir"])) for k in jobs}

@pytest.mark.parametrize("kind", FAMILIES)
def test_every_family_loads_without_lop(kind, plain):
    want, got, folder = plain[kind]
    assert got["cls"] == "Lop" + json.loads((folder/"lop.json").read_text())["model_class"]
    assert got["module"].startswith("transformers_modules"), "loaded from the folder's modeling_lop.py"
    assert got["logits"].dtype == torch.float32
    torch.testing.assert_close(got["logits"], want["logits"], rtol=0, atol=1e-5)
    assert torch.equal(got["tokens"], want["tokens"]), "generate() gives other tokens"
    assert torch.equal(got["resaved_logits"], got["logits"]), "saved again by transformers, the folder loads the same model"

@pytest.mark.parametrize("kind", FAMILIES)
def test_the_folder_lists_every_width_and_loads_with_lop(kind, plain, tmp_path):
    want, _, folder = plain[kind]
    cfg = json.loads((folder/"config.json").read_text())
    text = cfg.get("text_config", cfg)
    assert [text["per_layer_config"][f"{i}"]["intermediate_size"] for i in range(3)] == [32, 48, 13]
    assert all(text["per_layer_config"][f"{i}"]["down_proj_bias"] for i in range(3))      # FLAP compensation
    assert text["intermediate_size"] == 64 and list(cfg["auto_map"].values())[0].startswith("modeling_lop.Lop")
    assert "AutoModelForCausalLM" in cfg["auto_map"] if kind not in AUTO else "AutoModelForImageTextToText" in cfg["auto_map"]
    src = (folder/"modeling_lop.py").read_text()
    assert "import lop" not in src and "from lop" not in src and len(src.splitlines()) < 50
    m = load_pruned(folder)
    assert type(m).__module__.startswith("transformers.models.")
    assert [f.width for f in find_ffns(m)] == [32, 48, 13] and m.config.lop_pruning["ffn_widths"] == [32, 48, 13]
    x = toy_batch(m, (10, 7), seed=3)
    with one_thread(), torch.no_grad(): assert torch.equal(m(**x).logits, want["logits"])   # like for like: want is on one thread
    for fmt in ("lop", "hf"):     # what load_pruned gives saves again, in either format
        again = load_pruned(save_pruned(m, tmp_path/fmt, format=fmt))
        with one_thread(), torch.no_grad(): assert torch.equal(again(**x).logits, want["logits"]), fmt

@pytest.mark.parametrize("kind", ["llama", "qwen2_5_vl"])
def test_a_dense_model_is_unchanged(kind, plain):
    want, got, _ = plain[f"dense-{kind}"]
    assert torch.equal(got["logits"], want["logits"])

def test_the_testbed_at_30_percent(plain):
    "Same logits, same input ids from the saved tokenizer and image processor, and the same generated answer."
    want, got, folder = plain["testbed"]
    torch.testing.assert_close(got["logits"], want["logits"], rtol=0, atol=1e-5)
    assert torch.equal(got["input_ids"], want["input_ids"]), "the saved tokenizer/image processor encode the question otherwise"
    assert torch.equal(got["tokens"], want["tokens"])
    widths = [f.width for f in find_ffns(want["model"])]
    assert abs(1 - sum(widths) / (12 * 80) - 0.3) < 0.01 and len(set(widths)) > 1
    proc = want["processor"]
    assert (folder/"lop_processor.json").is_file() and proc.tokenizer.decode(got["tokens"][0, -3:]).strip()

def test_transformers_refuses_widths_that_disagree_with_the_weights(plain):
    "Plain transformers: edited widths raise (its load report lists MISMATCH); the stock class refuses per-layer widths."
    for name in ("edited-causal", "edited-vl"):
        err = plain[name][1]["error"]
        assert err.startswith("RuntimeError") and "ignore_mismatched_sizes" in err, err
    assert "AmbiguousGlobalPerLayerAttributeError" in plain["stock"][1]["error"]

def test_load_pruned_refuses_bad_folders(plain, tmp_path):
    folder = plain["llama"][2]
    with pytest.raises(LOPError, match="layer 1: width 40 in the config, 48 in the weights"): load_pruned(plain["edited-causal"][2])
    bad = tmp_path/"bad"; shutil.copytree(folder, bad)
    w = bad/"model.safetensors"; w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(LOPError, match="truncated"): load_pruned(bad)
    shutil.copy(folder/"model.safetensors", w)
    (bad/"modeling_lop.py").write_text((bad/"modeling_lop.py").read_text() + "\n# edited\n")
    with pytest.raises(LOPError, match="modeling_lop.py does not match its checksum"): load_pruned(bad)
    shutil.copy(folder/"modeling_lop.py", bad)
    (bad/"config.json").write_text("{not json")
    with pytest.raises(LOPError, match="config.json cannot be read"): load_pruned(bad)
    shutil.copy(folder/"config.json", bad); (bad/"model.safetensors").unlink()
    with pytest.raises(LOPError, match="has no model.safetensors"): load_pruned(bad)
    shutil.copy(folder/"model.safetensors", bad); (bad/"lop.json").unlink()
    with pytest.raises(LOPError, match=r"AutoModelForCausalLM.from_pretrained\(.*trust_remote_code=True\)"): load_pruned(bad)
    from lop.load import load_model
    with pytest.raises(LOPError, match="without its lop.json manifest"): load_model(str(bad))
    with pytest.raises(LOPError, match="unknown checkpoint format"): save_pruned(tiny("llama"), tmp_path/"x", format="onnx")
    assert not (tmp_path/"x").exists()

def test_lop_prune_format_hf(plain, tmp_path, capsys):
    "`lop prune --format hf` writes the very folder the testbed test loads without lop."
    assert main(["prune", "--model", "testbed", "--target", "0.3", "--format", "hf", "--out", str(tmp_path/"cli")]) == 0
    ours, cli = (json.loads((d/"lop.json").read_text()) for d in (plain["testbed"][2], tmp_path/"cli"))
    assert cli["format"] == "lop-hf" and cli["sha256"] == ours["sha256"] and cli["ffn_widths"] == ours["ffn_widths"]
    assert json.loads((tmp_path/"cli"/"config.json").read_text())["auto_map"]["AutoModelForImageTextToText"] == \
        "modeling_lop.LopQwen2_5_VLForConditionalGeneration"
    assert main(["prune", "--model", "testbed", "--target", "0.3", "--format", "onnx", "--out", str(tmp_path/"x")]) == 2
    assert "invalid choice: 'onnx'" in capsys.readouterr().err and not (tmp_path/"x").exists()

def test_smollm2_at_30_percent_without_lop(tmp_path):
    "A real pretrained model: SmolLM2-135M pruned to 30 % by the shipped predictor, loaded without lop, generates the same."
    from lop.load import load_model
    m, tok = load_model("smollm2-135m", device="cpu")
    prune_to(m, 0.3)
    d = save_pruned(m, tmp_path/"smol", tok, format="hf")
    text = "The capital of France is"
    x = tok("Python's standard library is very extensive, offering a wide range of facilities.", return_tensors="pt")
    want = expected(m, dict(x), dict(tok(text, return_tensors="pt")), new_tokens=8)
    got, = without_lop([job("smol", d, "AutoModelForCausalLM", dict(batch=dict(x)), text=text, new_tokens=8)], tmp_path)
    assert got["cls"] == "LopLlamaForCausalLM"
    torch.testing.assert_close(got["logits"], want["logits"], rtol=0, atol=1e-5)
    assert torch.equal(got["input_ids"], tok(text, return_tensors="pt")["input_ids"])
    assert torch.equal(got["tokens"], want["tokens"]), (tok.decode(got["tokens"][0]), tok.decode(want["tokens"][0]))
