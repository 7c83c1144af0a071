#!/usr/bin/env python3
"""Writes a random checkpoint with the shapes of a real BitNet model, for benchmarks.

Streams one tensor at a time (memory stays at one tensor), so multi-GB checkpoints can be
made on small machines. Only numpy is needed.

    python3 benches/make_checkpoint.py OUT_DIR [--shape large|3B|125M] [--dtype f32|f16] [--seed N] [--layers N]
"""
import argparse, json, os, struct
import numpy as np

SHAPES = {
    # name: hidden, intermediate, layers, heads, vocab
    "125M": (768, 3072, 11, 12, 32002),
    "large": (1536, 4096, 24, 16, 32002),  # 1bitLLM/bitnet_b1_58-large (0.7B)
    "3B": (3200, 8640, 26, 32, 32002),
}

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--shape", default="large", choices=SHAPES)
    ap.add_argument("--dtype", default="f32", choices=["f32", "f16"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", type=int, help="override the shape's layer count")
    ap.add_argument("--shards", type=int, default=1, help="write N shards and an index")
    a = ap.parse_args()
    h, f, n_layers, heads, vocab = SHAPES[a.shape]
    n_layers = a.layers or n_layers
    np_dtype, st_dtype = (np.float32, "F32") if a.dtype == "f32" else (np.float16, "F16")
    tensors = [("model.embed_tokens.weight", (vocab, h)), ("model.norm.weight", (h,))]
    for l in range(n_layers):
        p = f"model.layers.{l}."
        tensors += [
            (p + "input_layernorm.weight", (h,)),
            (p + "post_attention_layernorm.weight", (h,)),
            (p + "self_attn.inner_attn_ln.weight", (h,)),
            (p + "mlp.ffn_layernorm.weight", (f,)),
            (p + "self_attn.q_proj.weight", (h, h)),
            (p + "self_attn.k_proj.weight", (h, h)),
            (p + "self_attn.v_proj.weight", (h, h)),
            (p + "self_attn.o_proj.weight", (h, h)),
            (p + "mlp.gate_proj.weight", (f, h)),
            (p + "mlp.up_proj.weight", (f, h)),
            (p + "mlp.down_proj.weight", (h, f)),
        ]
    tensors.sort()
    itemsize = np.dtype(np_dtype).itemsize
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    # Split into shards of about equal size, in name order (as transformers' save does).
    total = sum(int(np.prod(s)) * itemsize for _, s in tensors)
    per = total / a.shards
    groups, cur, size = [], [], 0
    for t in tensors:
        cur.append(t)
        size += int(np.prod(t[1])) * itemsize
        if size >= per * (len(groups) + 1) and len(groups) < a.shards - 1:
            groups.append(cur)
            cur = []
    groups.append(cur)
    weight_map, off_total = {}, 0
    for gi, group in enumerate(groups):
        fname = "model.safetensors" if a.shards == 1 else f"model-{gi + 1:05d}-of-{len(groups):05d}.safetensors"
        header, off = {}, 0
        for name, shape in group:
            n = int(np.prod(shape)) * itemsize
            header[name] = {"dtype": st_dtype, "shape": list(shape), "data_offsets": [off, off + n]}
            off += n
            weight_map[name] = fname
        hb = json.dumps(header).encode()
        hb += b" " * (-len(hb) % 8)
        with open(os.path.join(a.out, fname), "wb") as fo:
            fo.write(struct.pack("<Q", len(hb)) + hb)
            for name, shape in group:
                if len(shape) == 1:
                    x = (1.0 + 0.05 * rng.standard_normal(shape)).astype(np_dtype)
                else:
                    x = (0.02 * rng.standard_normal(shape, dtype=np.float32)).astype(np_dtype)
                fo.write(x.tobytes())
        off_total += off
    if a.shards > 1:
        with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as fo:
            json.dump({"metadata": {"total_size": off_total}, "weight_map": weight_map}, fo, indent=2)
    off = off_total
    cfg = {
        "architectures": ["BitnetForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "hidden_size": h, "intermediate_size": f, "num_hidden_layers": n_layers,
        "num_attention_heads": heads, "num_key_value_heads": heads, "vocab_size": vocab,
        "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": True, "torch_dtype": "float32" if a.dtype == "f32" else "float16",
        "bos_token_id": 1, "eos_token_id": 2,
    }
    with open(os.path.join(a.out, "config.json"), "w") as fo:
        json.dump(cfg, fo, indent=2)
    print(f"wrote {a.out}: {off / 1e9:.2f} GB of {a.dtype} weights")

if __name__ == "__main__":
    main()
