#!/usr/bin/env python3
"""Make the per-family test checkpoints and their transformers goldens (issue 8). CI never runs this;
its outputs are committed under tests/data/families/<family>/ and golden/families/.

How it was run (from the repository root, CPU only, 2 threads, about 3 minutes), with exactly
Python 3.11.7, torch 2.15.0 (the PyPI wheel), transformers 5.23.0, tokenizers 0.23.3,
safetensors 0.8.0 and numpy 2.4.6 (pinned in tests/data/families/requirements.txt):

    python3 -m pip install -r tests/data/families/requirements.txt
    TORCH_COMPILE_DISABLE=1 python3 tests/data/families/make_families.py

Families (small models, 2 layers, hidden 512, FFN 512, so that every output type applies:
TQ2_0 needs rows that are multiples of 256, and TL2 needs a BK (multiple of 24) with K % BK a
multiple of 32 and at most K/16, which K = 256 does not have and K = 512 has (BK = 96)):

  bitnet-2b4t-packed  BitNetForCausalLM, relu2, GQA 8/2, tied head, sub-norms; projections packed
                      uint8 + float32 `weight_scale`, quantization_config linear_class
                      `autobitlinear`, quantization_mode `offline` (microsoft/BitNet-b1.58-2B-4T)
  bitnet-2b4t-bf16    the same model's bf16 master weights, `autobitlinear` `online`
                      (microsoft/bitnet-b1.58-2B-4T-bf16). The packed codes and weight_scale above are
                      the absmean ternarization of exactly these bf16 values (float32 mean, torch, 2
                      threads), so both convert to identical I2_S tensors.
  llama3-8b           LlamaForCausalLM, silu, GQA 8/2, untied lm_head, quantization_config
                      {quant_method: bitnet} (linear_class defaults to `bitlinear`), packed uint8 +
                      weight_scale = 1/absmean (HF1BitLLM/Llama3-8B-1.58-100B-tokens)
  falcon3             as llama3-8b with an explicit head_dim (128, 4 heads / 1 KV head) (tiiuae/Falcon3-*-1.58bit)
  falcon-e            as llama3-8b (tiiuae/Falcon-E-*)

Weights: random (seed 1234), then trained for a few steps on the text below (see master_weights:
24 full-batch AdamW steps, every projection ternary with int8 activations and straight-through
gradients, as BitNet models are trained). The untrained models' logits were near-tied (many rows
with a top-1/top-2 gap of a few percent of the logits' spread), so correct implementations that
differ only in f16 scales or an int8 rounding flipped argmaxes (Falcon3's TQ2_0 file: 9 of 132);
trained, the next-token distributions are peaked as a language model's are, and top-1 agreement
measures the implementation rather than the tie-breaking. Training is deterministic on CPU with
the versions above.

Goldens come from transformers' own modules: the model class built from config.json, its nn.Linear
projections replaced by transformers.integrations.bitnet (AutoBitLinear online/offline or BitLinear)
exactly as its bitnet quantizer does, the checkpoint's tensors loaded into them (packed weights
unpacked with transformers' unpack_weights), float64, eager (TORCH_COMPILE_DISABLE=1: the
integration decorates its quantizers with torch.compile, which needs a C compiler on CPU), one token
per step through the model's KV cache as a decode loop runs (mode "sequential"; a whole-sequence
causal pass is checked to give the same rows). Activations are quantized per token to int8 by
transformers, as bitnet.cpp's kernels do: AutoBitLinear (2B-4T) in float32, BitLinear (the Llama
architecture) in the model's dtype, float64 here. bitconv validates files against these goldens with
transformers' roundings (runtime::Emulation::Transformers, an f32 KV cache).

Tokenizers: a byte-level BPE trained here with the `tokenizers` package on the text below, the
Llama-3 split expression and Llama-3 special tokens (<|begin_of_text|> … <|eot_id|>), BOS added by
the post-processor. All families use the Llama-3 split expression (llama.cpp handles `falcon3` and
`falcon_e` with the same expression); being trained here, their probe hashes are not the real ones,
so conversions name the pre-tokenizer with --tokenizer-pre (llama-bpe, falcon3, falcon_e).
Token ids in the goldens are transformers' AutoTokenizer's on calibration/prompts.json.

Greedy tokens: 16 per prompt; logits rows are prompt rows then generated rows. Ternary files of
every type are validated against one golden and may legitimately flip a near-tied greedy token, so
goldens say greedy_must_match = false.
"""
import base64
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TORCH_COMPILE_DISABLE", "1")

import numpy as np
import torch
from safetensors.torch import save_file
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

import transformers
from transformers import AutoTokenizer
from transformers.integrations.bitnet import AutoBitLinear, BitLinear, pack_weights, unpack_weights

ROOT = Path(__file__).resolve().parents[3]
OUT = ROOT / "tests/data/families"
GOLD = ROOT / "golden/families"
PROMPTS = json.loads((ROOT / "calibration/prompts.json").read_text())
N_GREEDY = PROMPTS["greedy_tokens"]

torch.set_num_threads(2)
# Forward passes in float64 so that the golden adds no rounding noise of its own (transformers'
# quantizers still compute weight and activation scales in float32, as they are written).
DTYPE = torch.float64
torch.manual_seed(0)

LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]
TEXT = """The quick brown fox jumps over the lazy dog. Once upon a time there was a small village.
In a small village at the edge of the forest, there lived an old woodcutter and his daughter.
Question: What is the capital of France? Answer: Paris is the capital of France.
def fibonacci(n):
    if n < 2:
        return n
    return fibonacci(n - 1) + fibonacci(n - 2)
The weather was cold and the river was frozen; the children played on the ice all day long.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 1234 2026. Symbols: ( ) [ ] { } < > = + - * / % ! ? : ; , .
She said: "I'll be there at 5 o'clock, don't worry." They've gone home; we're late, aren't we?
"""


def build_tokenizer(vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE(byte_fallback=False, ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    tok.train_from_iterator([TEXT] * 4, trainer=trainer)
    tok.add_special_tokens(SPECIALS)
    bos = SPECIALS[0]
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{bos}:0 $A:0",
                pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
                special_tokens=[(bos, tok.token_to_id(bos))],
            ),
        ]
    )
    return tok


LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant"
    "<|end_header_id|>\n\n' }}{% endif %}"
)


def write_tokenizer(d: Path, tok: Tokenizer, eos: str):
    tok.save(str(d / "tokenizer.json"))
    added = {
        str(tok.token_to_id(s)): {
            "content": s,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for s in SPECIALS
    }
    cfg = {
        "added_tokens_decoder": added,
        "bos_token": SPECIALS[0],
        "eos_token": eos,
        "chat_template": LLAMA3_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 4096,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    (d / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    (d / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": SPECIALS[0], "eos_token": eos}, indent=2) + "\n"
    )


HIDDEN, FFN, LAYERS = 512, 512, 2
PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def is_proj(name: str) -> bool:
    return any(name.endswith(f"{p}.weight") for p in PROJ)


def absmean_ternary(w: torch.Tensor):
    """transformers' WeightQuant: m = max(mean|W|, 1e-5) in float32; T = clamp(round(W/m), -1, 1)."""
    w = w.float()
    m = w.abs().mean().clamp(min=1e-5)
    s = 1.0 / m
    t = (w * s).round().clamp(-1, 1)
    return t, m


def family_config(kind: str, vocab: int, tok: Tokenizer, eos: str) -> dict:
    bos_id, eos_id = tok.token_to_id(SPECIALS[0]), tok.token_to_id(eos)
    common = {
        "hidden_size": HIDDEN,
        "intermediate_size": FFN,
        "num_hidden_layers": LAYERS,
        "vocab_size": vocab,
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "attention_bias": False,
        "initializer_range": 0.02,
    }
    if kind.startswith("bitnet"):
        online = kind.endswith("bf16")
        return {
            "architectures": ["BitNetForCausalLM"],
            "model_type": "bitnet",
            "hidden_act": "relu2",
            "num_attention_heads": 8,
            "num_key_value_heads": 2,
            "tie_word_embeddings": True,
            "torch_dtype": "bfloat16",
            **common,
            "quantization_config": {
                "quant_method": "bitnet",
                "linear_class": "autobitlinear",
                "quantization_mode": "online" if online else "offline",
            },
        }
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_act": "silu",
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "mlp_bias": False,
        **common,
        "quantization_config": {"quant_method": "bitnet"},
    }
    if kind == "falcon3":
        # Falcon3 states head_dim (256 in the real models, hidden/heads there too); here it is
        # 128 with 4 heads, so q_proj is 512 x 512 and k/v_proj 128 x 512.
        cfg["head_dim"] = 128
        cfg["num_attention_heads"] = 4
        cfg["num_key_value_heads"] = 1
    return cfg


def initial_weights(model) -> dict:
    """Random float weights in bf16: projections N(0, 0.05), norms near 1, embeddings N(0, 0.5)."""
    g = torch.Generator().manual_seed(1234)
    sd = {}
    for name, p in model.state_dict().items():
        if name.endswith("norm.weight") or "layernorm" in name:
            v = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
        elif is_proj(name):
            v = 0.05 * torch.randn(p.shape, generator=g)
        else:
            v = 0.5 * torch.randn(p.shape, generator=g)
        sd[name] = v.to(torch.bfloat16)
    return sd


TRAIN_STEPS, TRAIN_LR = 24, 1e-3


def master_weights(cfg: dict, tok: Tokenizer) -> dict:
    """The random initial weights trained for TRAIN_STEPS full-batch AdamW steps on TEXT (float32,
    every projection an AutoBitLinear in online mode, i.e. absmean ternary weights and int8
    activations with straight-through gradients, as BitNet models are trained), returned in bf16.

    Why train: an untrained random model's logits are near-tied (the top-1/top-2 gap is a few
    percent of the logits' spread in many rows), so legitimate differences between correct
    implementations (f16 scales and head, int8 roundings) flip argmaxes. A few steps give the
    peaked next-token distributions of a trained model, so that top-1 agreement measures the
    implementation and not the tie-breaking."""
    model = build_model(cfg, torch.float32)
    init = initial_weights(model)
    if model.config.tie_word_embeddings:
        init.pop("lm_head.weight", None)
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in init.items()}, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    for name, mod in list(model.named_modules()):
        if isinstance(mod, torch.nn.Linear) and not name.endswith("lm_head"):
            new = AutoBitLinear(mod.in_features, mod.out_features, bias=False, dtype=torch.float32, online_quant=True)
            new.weight.data = mod.weight.data.clone()
            model.set_submodule(name, new)
    if model.config.tie_word_embeddings:
        model.tie_weights()
    ids = torch.tensor([tok.encode(TEXT).ids])
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=TRAIN_LR, weight_decay=0.0)
    model.train()
    for step in range(TRAIN_STEPS):
        loss = model(ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in (0, TRAIN_STEPS - 1):
            print(f"  step {step}: loss {loss.item():.3f}")
    sd = {k: v.detach().to(torch.bfloat16) for k, v in model.state_dict().items()}
    assert set(sd) == set(init) | ({"lm_head.weight"} if model.config.tie_word_embeddings else set())
    if model.config.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    return sd


def build_model(cfg: dict, dtype=None):
    c = dict(cfg)
    c.pop("quantization_config", None)
    c.pop("architectures", None)
    c.pop("torch_dtype", None)
    mt = c.pop("model_type")
    conf = transformers.AutoConfig.for_model(mt, **c)
    conf.architectures = cfg["architectures"]
    cls = getattr(transformers, cfg["architectures"][0])
    model = cls(conf).to(dtype or DTYPE).eval()
    return model


def swap_linears(model, qc: dict, tensors: dict):
    """Replace projections as transformers' bitnet quantizer does, and load the checkpoint tensors."""
    autob = qc.get("linear_class") == "autobitlinear"
    online = qc.get("quantization_mode") == "online"
    for name, mod in list(model.named_modules()):
        if not isinstance(mod, torch.nn.Linear) or name.endswith("lm_head"):
            continue
        w = tensors[f"{name}.weight"]
        if autob:
            new = AutoBitLinear(mod.in_features, mod.out_features, bias=False, dtype=DTYPE, online_quant=online)
            if online:
                new.weight.data = w.to(DTYPE)
            else:
                new.weight.data = unpack_weights(w, dtype=DTYPE)
                new.weight_scale.data = tensors[f"{name}.weight_scale"].to(DTYPE).reshape(1)
        else:
            new = BitLinear(mod.in_features, mod.out_features, bias=False, dtype=DTYPE)
            new.weight.data = w
            new.weight_scale.data = tensors[f"{name}.weight_scale"].to(DTYPE).reshape(1)
        model.set_submodule(name, new)
    rest = {k: v.to(DTYPE) for k, v in tensors.items() if not (is_proj(k) or k.endswith("weight_scale"))}
    missing, unexpected = model.load_state_dict(rest, strict=False)
    missing = [m for m in missing if not (is_proj(m) or m.endswith("weight_scale"))]
    if model.config.tie_word_embeddings:
        missing = [m for m in missing if m != "lm_head.weight"]
    assert not missing and not unexpected, (missing, unexpected)
    if model.config.tie_word_embeddings:
        model.tie_weights()
    return model


@torch.no_grad()
def sequential_rows(model, ids, n_greedy):
    """One token per step through transformers' KV cache, as a decode loop runs: a logits row
    after every prompt token, then `n_greedy` greedy tokens, each fed back (row after each)."""
    rows, past, greedy = [], None, []
    feed = list(ids)
    i = 0
    while i < len(feed):
        out = model(torch.tensor([[feed[i]]]), past_key_values=past, use_cache=True)
        past = out.past_key_values
        rows.append(out.logits[0, -1].double().numpy())
        i += 1
        if i == len(feed) and len(greedy) < n_greedy:
            greedy.append(int(np.argmax(rows[-1])))
            feed.append(greedy[-1])
    return np.array(rows), greedy


@torch.no_grad()
def golden_for(model, hf_tok, family: str, source: str, arch: str, vocab: int, weights: str) -> dict:
    prompts = []
    for text in PROMPTS["prompts"]:
        ids = hf_tok(text)["input_ids"]
        full, greedy = sequential_rows(model, ids, N_GREEDY)
        assert len(full) == len(ids) + N_GREEDY
        # The same rows from one causal pass over the whole sequence (a check of the loop).
        batched = model(torch.tensor([ids + greedy])).logits[0].double().numpy()
        assert np.allclose(full, batched, rtol=0, atol=1e-9 * np.abs(batched).max()), text
        rows = full.astype("<f4")
        prompts.append(
            {
                "text": text,
                "token_ids": ids,
                "greedy_ids": greedy,
                "greedy_text": hf_tok.decode(greedy),
                "mode": "sequential",
                "logits": {
                    "encoding": "f32-le-base64",
                    "rows": rows.shape[0],
                    "cols": rows.shape[1],
                    "data": base64.b64encode(rows.tobytes()).decode(),
                },
            }
        )
    return {
        "format": "bitconv-golden",
        "version": 1,
        "producer": {
            "name": "transformers",
            "version": f"transformers {transformers.__version__}, torch {torch.__version__}",
            "details": "tests/data/families/make_families.py: transformers model class with "
            "integrations.bitnet linears, float64, eager, one token per step through its KV "
            "cache",
        },
        "model": {
            "name": family,
            "source": source,
            "kind": "checkpoint",
            "sha256": None,
            "arch": arch,
            "n_vocab": vocab,
            "weights": weights,
        },
        "tolerances": {
            "min_cosine": 0.99,
            "max_abs_diff": None,
            "min_top1_agreement": 0.95,
            "greedy_must_match": False,
        },
        "prompts": prompts,
    }


def make_family(kind: str, eos: str, tok_vocab: int = 480):
    tok = build_tokenizer(tok_vocab)
    vocab = tok.get_vocab_size()
    cfg = family_config("bitnet-2b4t-bf16" if kind == "bitnet-2b4t" else kind, vocab, tok, eos)
    master = master_weights(cfg, tok)
    variants = {}
    if kind == "bitnet-2b4t":
        variants["bitnet-2b4t-bf16"] = (cfg, dict(master))
    packed_cfg = family_config("bitnet-2b4t" if kind == "bitnet-2b4t" else kind, vocab, tok, eos)
    packed = {}
    for k, v in master.items():
        if is_proj(k):
            t, m = absmean_ternary(v)
            packed[k] = pack_weights(t.to(torch.int8))
            ws = m if kind == "bitnet-2b4t" else 1.0 / m
            packed[k + "_scale"] = ws.reshape(1).float()
        else:
            packed[k] = v
    variants[f"{kind}-packed" if kind == "bitnet-2b4t" else kind] = (packed_cfg, packed)
    for name, (c, tensors) in variants.items():
        d = OUT / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(json.dumps(c, indent=2) + "\n")
        save_file({k: v.contiguous() for k, v in sorted(tensors.items())}, str(d / "model.safetensors"), metadata={"format": "pt"})
        write_tokenizer(d, tok, eos)
        hf_tok = AutoTokenizer.from_pretrained(str(d))
        m = swap_linears(build_model(c), c["quantization_config"], tensors)
        arch = "bitnet-b1.58" if kind == "bitnet-2b4t" else "llama"
        g = golden_for(m, hf_tok, name, f"tests/data/families/{name}", arch, vocab,
                       "ternary weights, int8 per-token activations (transformers)")
        GOLD.mkdir(parents=True, exist_ok=True)
        (GOLD / f"{name}.transformers.json").write_text(json.dumps(g) + "\n")
        print(name, "vocab", vocab, "prompt tokens", [len(p["token_ids"]) for p in g["prompts"]])


if __name__ == "__main__":
    make_family("bitnet-2b4t", "<|end_of_text|>")
    make_family("llama3-8b", "<|eot_id|>")
    make_family("falcon3", "<|end_of_text|>")
    make_family("falcon-e", "<|end_of_text|>")
