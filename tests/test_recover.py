"Recovery from the command line (lop.recover, lop recover, lop prune --recover): same widths, same format, the record in the manifest, bad input refused."
import json, os, subprocess, sys
from pathlib import Path
import pytest, torch
from lop.cli import main
from lop.models import find_ffns
from lop.prune import load_pruned, save_pruned
from conftest import one_thread
sys.path.insert(0, os.path.dirname(__file__))

SMALL = ["--windows", "8", "--batch-size", "4", "--lr", "1e-4"]   # two batches of SynthVQA calibration items

@pytest.fixture(scope="module")
def pruned_hf(tmp_path_factory):
    "The testbed pruned to 30 % by its shipped predictor and recovered for 3 steps, written as a folder for plain transformers."
    d = tmp_path_factory.mktemp("rec")
    assert main(["prune", "--model", "testbed", "--target", "0.3", "--format", "hf", "--recover", "3", *SMALL, "--out", str(d/"p30")]) == 0
    return d/"p30"

def test_prune_then_recover_keeps_widths_format_and_record(pruned_hf, tmp_path):
    man = json.loads((pruned_hf/"lop.json").read_text())
    assert man["format"] == "lop-hf" and man["source"] == "testbed"
    rec = man["recovery"]
    assert rec["steps"] == 3 and len(rec["history"]) == 3 and rec["tokens"] > 0 and rec["teacher"] == "testbed"
    assert rec["data"] == dict(corpus="synthvqa", split="calibration", items=8) and rec["recipe"]["lr"] == 1e-4
    assert not any(p.name.endswith(".recover.pt") for p in pruned_hf.parent.iterdir())   # the checkpoint goes once the run is saved
    plain = subprocess.run([sys.executable, "-c", "import sys, transformers\n"
                            "m = transformers.AutoModelForImageTextToText.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
                            "assert 'lop' not in sys.modules\nprint([l.mlp.down_proj.in_features for l in m.model.language_model.layers])",
                            str(pruned_hf)], capture_output=True, text=True, timeout=600, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert json.loads(plain.stdout.strip().splitlines()[-1]) == man["ffn_widths"]   # the recovered folder loads without lop

def _library_run(folder, steps, **recipe):
    "What `lop recover FOLDER` with SMALL's data should produce: the library's `recover` on the same data, recipe and teacher."
    from argparse import Namespace
    from lop.cli import _recovery_data
    from lop.load import load_model
    from lop.recover import recover, RecoverRecipe
    m, proc = load_model(str(folder))
    batches, _ = _recovery_data(proc, Namespace(windows=8, batch_size=4, seed=0, corpus="pydoc"))
    rec = recover(m, load_model("testbed")[0], batches, RecoverRecipe(steps=steps, seed=0, **recipe), progress=False)
    return m, rec

def test_recover_a_checkpoint_again(pruned_hf, tmp_path):
    "`lop recover DIR` finds the dense teacher in the manifest, keeps the widths and the format, and trains what the library trains."
    assert main(["recover", str(pruned_hf), "--steps", "2", *SMALL, "--out", str(tmp_path/"again")]) == 0
    a, b = load_pruned(pruned_hf), load_pruned(tmp_path/"again")
    assert [f.width for f in find_ffns(a)] == [f.width for f in find_ffns(b)]
    assert json.loads((tmp_path/"again"/"lop.json").read_text())["format"] == "lop-hf"
    assert b.lop_recovery["steps"] == 2 and b.lop_source == "testbed"
    want, rec = _library_run(pruned_hf, 2, lr=1e-4)
    assert [h["loss"] for h in b.lop_recovery["history"]] == [h["loss"] for h in rec["history"]]
    sb, sw = b.state_dict(), want.state_dict()
    assert sb.keys() == sw.keys() and all(torch.equal(sb[k], sw[k]) for k in sb)   # the same weights, not merely other ones

def test_recover_with_lora_adapters(pruned_hf, tmp_path):
    "`--lora-rank` trains adapters and merges them back: the same tensors as before (no adapter left), other values, the recipe recorded."
    assert main(["recover", str(pruned_hf), "--steps", "2", *SMALL[:-2], "--lr", "1e-3", "--lora-rank", "4", "--out", str(tmp_path/"lora")]) == 0
    a, b = load_pruned(pruned_hf), load_pruned(tmp_path/"lora")
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape for k in sa)
    assert b.lop_recovery["recipe"]["lora_rank"] == 4 and b.lop_recovery["recipe"]["lr"] == 1e-3
    want, _ = _library_run(pruned_hf, 2, lr=1e-3, lora_rank=4)
    sw = want.state_dict()
    assert sw.keys() == sa.keys() and all(torch.equal(sb[k], sw[k]) for k in sb)   # adapters trained, merged back
    assert any(not torch.equal(sa[k], sb[k]) for k in sa)

def test_bad_input(pruned_hf, tmp_path, capsys):
    from lop.toy import toy_model
    assert main(["recover", str(pruned_hf), "--steps", "0", "--out", str(tmp_path/"x")]) == 2
    assert "steps=0 must be an integer" in capsys.readouterr().err and not (tmp_path/"x").exists()
    bare = tmp_path/"bare"; m = load_pruned(pruned_hf); del m.lop_source; del m.lop_recovery
    save_pruned(m, bare)
    assert main(["recover", str(bare), "--steps", "1", "--out", str(tmp_path/"x")]) == 2
    assert "does not name the dense model" in capsys.readouterr().err
    other = tmp_path/"llama"; save_pruned(toy_model("llama"), other)
    assert main(["recover", str(pruned_hf), "--steps", "1", "--teacher", str(other), *SMALL, "--out", str(tmp_path/"x")]) == 2
    assert "the teacher is a LlamaForCausalLM" in capsys.readouterr().err and not (tmp_path/"x").exists()
    assert main(["recover", str(tmp_path), "--steps", "1", "--out", str(tmp_path/"x")]) == 2
    assert "not a pruned checkpoint" in capsys.readouterr().err

@pytest.mark.slow   # the real model end to end through the command line
def test_recover_smollm2_from_the_command_line(tmp_path):
    "A real pretrained model: SmolLM2 pruned to 30 %, then `lop recover` for one step on its calibration windows of pydoc."
    assert main(["prune", "--model", "smollm2-135m", "--target", "0.3", "--out", str(tmp_path/"s30")]) == 0
    assert json.loads((tmp_path/"s30"/"lop.json").read_text())["source"] == "smollm2-135m"
    assert main(["recover", str(tmp_path/"s30"), "--steps", "1", "--windows", "4", "--out", str(tmp_path/"s30r")]) == 0
    rec = json.loads((tmp_path/"s30r"/"lop.json").read_text())["recovery"]
    assert rec["data"]["corpus"] == "pydoc" and rec["data"]["split"] == "calibration" and rec["tokens"] == 4 * 256
    assert [f.width for f in find_ffns(load_pruned(tmp_path/"s30"))] == [f.width for f in find_ffns(load_pruned(tmp_path/"s30r"))]

@pytest.mark.slow   # SmolLM2 (~30 s): recovered on its own answers to a user's prompts
def test_recover_smollm2_on_chat_prompts_from_the_command_line(tmp_path, capsys):
    "`--prompts`: the dense model answers once (cached beside --out, reused by the next run), the conversations are the recovery data."
    (tmp_path/"p.jsonl").write_text('{"prompt": "What is the capital of Italy?"}\n{"prompt": "Name a yellow fruit."}\n'
                                    '{"messages": [{"role": "user", "content": "Write a haiku about rain."}]}\n')
    assert main(["prune", "--model", "smollm2-135m", "--target", "0.3", "--out", str(tmp_path/"s30")]) == 0
    args = ["recover", str(tmp_path/"s30"), "--steps", "1", "--prompts", str(tmp_path/"p.jsonl"), "--answer-tokens", "16", "--batch-size", "3"]
    assert main(args + ["--out", str(tmp_path/"r")]) == 0
    rec = json.loads((tmp_path/"r"/"lop.json").read_text())["recovery"]
    assert rec["data"]["n"] == 3 and rec["data"]["answer_tokens"] == 16 and rec["batches"] == 1
    cache = (tmp_path/"r.answers.jsonl").read_text().splitlines()
    assert len(cache) == 4 and all(json.loads(l)["answer"] for l in cache[1:])      # a head line, then one answer a prompt
    assert 3 * 30 < rec["tokens"] < 3 * (16 + 60)                                   # the template's system turn, the prompt and the answer
    (tmp_path/"p.txt").write_text("")
    assert main(args[:5] + [str(tmp_path/"p.txt"), "--out", str(tmp_path/"r2")]) == 2
    assert "holds no prompt" in capsys.readouterr().err and not (tmp_path/"r2").exists()

def test_the_split_is_the_corpus_s_own_whatever_the_seed():
    "`--seed` orders the batches; the documents of calibration, validation and test are the documented split's (SPLIT_SEED) for every command."
    from argparse import Namespace
    from lop.cli import _recovery_data, _text
    from lop.text import SPLIT_SEED
    from test_gguf import byte_bpe
    tok = byte_bpe()
    data = {seed: _recovery_data(tok, Namespace(windows=4, batch_size=2, seed=seed, corpus="pydoc")) for seed in (0, 1)}
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(data[0][0], data[1][0]))
    assert data[1][1]["split_seed"] == SPLIT_SEED == 0 and data[1][1]["split"] == "calibration"
    held_out = _text(tok, Namespace(corpus="pydoc", seed=1), test=2).meta
    assert held_out["split_seed"] == 0 and held_out["test_docs"] == _text(tok, Namespace(corpus="pydoc", seed=0), test=2).meta["test_docs"]

def test_a_failed_save_keeps_the_run_and_another_prune_never_resumes_it(tmp_path, capsys, monkeypatch):
    """Two prunes at the same widths (L2 and magnitude scores): a recovery of the first whose save fails keeps its checkpoint;
    the second, recovered to the same output, is refused by that checkpoint; the first, run again, resumes it without training."""
    import lop.cli as cli
    from lop.load import load_model
    mag = tmp_path/"mag.safetensors"
    assert main(["importance", "--model", "testbed", "--metric", "magnitude", "--n", "4", "--out", str(mag)]) == 0
    assert main(["prune", "--model", "testbed", "--target", "0.3", "--out", str(tmp_path/"l2")]) == 0
    assert main(["prune", "--model", "testbed", "--target", "0.3", "--scores", str(mag), "--out", str(tmp_path/"mag")]) == 0
    a, b = load_model(str(tmp_path/"l2"))[0], load_model(str(tmp_path/"mag"))[0]
    assert [f.width for f in find_ffns(a)] == [f.width for f in find_ffns(b)] and not torch.equal(find_ffns(a)[0].down.weight, find_ffns(b)[0].down.weight)
    out, ck = tmp_path/"r", tmp_path/"r.recover.pt"
    def full_disk(*args, **kw): raise OSError(28, "No space left on device")
    monkeypatch.setattr(cli, "save_pruned", full_disk)
    assert main(["recover", str(tmp_path/"l2"), "--steps", "3", *SMALL, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and f"the recovery is kept in {ck}" in err
    assert ck.is_file() and not out.exists()                          # 3 steps of work kept
    monkeypatch.undo()
    capsys.readouterr()
    assert main(["recover", str(tmp_path/"mag"), "--steps", "3", *SMALL, "--out", str(out)]) == 2
    assert "belongs to another recovery run" in capsys.readouterr().err and ck.is_file() and not out.exists()
    assert main(["recover", str(tmp_path/"l2"), "--steps", "3", *SMALL, "--out", str(out)]) == 0
    rec = json.loads((out/"lop.json").read_text())["recovery"]
    assert rec["resumed_at"] == 3 and len(rec["history"]) == 3 and not ck.exists()   # saved from the checkpoint, which then goes

def test_target_zero_and_broken_model_files(tmp_path, capsys):
    from lop.load import gguf_path, load_model
    assert main(["prune", "--model", "testbed", "--target", "0", "--out", str(tmp_path/"dense")]) == 0
    assert "reached:   0.0000 (counted on the pruned model; the dense model)" in capsys.readouterr().out
    assert [f.width for f in find_ffns(load_pruned(tmp_path/"dense"))] == [f.width for f in find_ffns(load_model("testbed")[0])]
    cut = tmp_path/"cut.gguf"; cut.write_bytes(gguf_path("smollm2-135m").read_bytes()[:100_000])   # the first 100 kB of the shipped file
    assert main(["prune", "--model", str(cut), "--target", "0.3", "--out", str(tmp_path/"x")]) == 2
    err = capsys.readouterr().err
    assert f"{cut} is damaged or truncated" in err and "fix:" in err and not (tmp_path/"x").exists()
