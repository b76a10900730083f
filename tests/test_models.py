import pytest, torch, torch.nn as nn, transformers as tf
from lop.core import LOPError
from lop.models import find_ffns, model_stats, language_backbone
from lop.toy import TOY_KINDS, toy_model

@pytest.mark.parametrize("kind", TOY_KINDS)
def test_find_ffns_language_backbone_only(kind):
    m = toy_model(kind, layers=4)
    ffns = find_ffns(m)
    assert [f.index for f in ffns] == [0, 1, 2, 3]
    assert all(f.width == 64 and f.hidden == 32 for f in ffns)
    # every FFN lives under the module that owns the token embedding; none in a vision tower or projector
    name, backbone, _ = language_backbone(m)
    owned = {id(x) for x in backbone.modules()}
    assert all(id(f.mlp) in owned for f in ffns)
    assert not any(k in f.name for f in ffns for k in ("visual", "vision", "projector"))

def test_vision_gated_mlps_are_not_returned():
    m = toy_model("qwen2_5_vl")
    vision_mlps = [mod for n, mod in m.named_modules() if n.startswith("model.visual") and hasattr(mod, "gate_proj")]
    assert vision_mlps, "the Qwen2.5-VL vision tower has gated MLPs"
    assert not {id(v) for v in vision_mlps} & {id(f.mlp) for f in find_ffns(m)}

def test_any_gated_decoder_is_supported():
    # a model family not named anywhere in lop: Gemma's decoder MLPs have the same gated shape
    cfg = tf.GemmaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, head_dim=16, vocab_size=64)
    assert [f.width for f in find_ffns(tf.GemmaForCausalLM(cfg))] == [48, 48]

@pytest.mark.parametrize("model, msg", [
    (lambda: tf.GPT2LMHeadModel(tf.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64)), "not a gated FFN"),
    (lambda: nn.Sequential(nn.Linear(3, 3)), "no token embedding"),
])
def test_unsupported_models_are_refused(model, msg):
    with pytest.raises(LOPError, match=msg) as e: find_ffns(model())
    assert "fix:" in str(e.value)

def test_stats_count_each_parameter_once():
    m = toy_model("llama")
    m.config.tie_word_embeddings = True; m.tie_weights()
    s = model_stats(m)
    assert s["total_params"] == sum(p.numel() for p in m.parameters())
    assert s["ffn_params"] == 3 * (3 * 32 * 64)
    assert s["ffn_flops"] == 2 * s["ffn_params"]
    # FLOPs: every linear layer of the decoder plus the LM head, 2 per multiply-add
    lin = sum(mod.weight.numel() for mod in m.model.layers.modules() if isinstance(mod, nn.Linear)) + m.lm_head.weight.numel()
    assert s["language_flops"] == 2 * lin
    assert model_stats(m, context=100)["language_flops"] == 2 * lin + 4 * 100 * 3 * 32
