#!/usr/bin/env python3
"""Write a Hugging Face folder of random LLaDA weights of a models.toml shape (default
`llada-small`), laid out like GSAI-ML/LLaDA-8B-Instruct, so that llama.cpp's
`convert_hf_to_gguf.py` can turn it into a GGUF that both llama.cpp and dcoder load:

    python3 benches/random_llada_folder.py --fixture ../shared/parity/llada-tiny -o /tmp/llada-small-hf

config.json is the fixture's (the real checkpoint's keys) with the shape's size fields; the
tokenizer files are copied from the fixture (the real LLaDA tokenizer, 126464 entries, so the
vocabulary matches `vocab_size`). Weights are bf16, normal with std 0.02 (the checkpoint's
`init_std`), norms 1.0; needs only numpy (bf16 is written as rounded f32 bits).
"""
import argparse
import json
import pathlib
import shutil
import struct
import tomllib

import numpy as np


def bf16_bytes(a):
    """Round-to-nearest-even f32 -> bf16, as torch's `.to(torch.bfloat16)` does."""
    bits = a.astype(np.float32).view(np.uint32)
    bits = bits + (np.uint32(0x7FFF) + ((bits >> 16) & 1))
    return (bits >> 16).astype(np.uint16).tobytes()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shape", default="llada-small")
    p.add_argument("--models-toml", default=str(pathlib.Path(__file__).parent.parent / "models.toml"))
    p.add_argument("--fixture", required=True, help="a LLaDA HF folder to take config keys and tokenizer from")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    shape = tomllib.loads(pathlib.Path(args.models_toml).read_text())["shape"][args.shape]
    if shape["arch"] != "llada":
        raise SystemExit(f"shape {args.shape} is {shape['arch']}, not llada")
    c = shape["config"]
    fixture = pathlib.Path(args.fixture)
    out = pathlib.Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    config = json.loads((fixture / "config.json").read_text())
    for k in ("d_model", "n_layers", "n_heads", "n_kv_heads", "mlp_hidden_size", "vocab_size",
              "embedding_size", "rope_theta", "rms_norm_eps", "max_sequence_length", "weight_tying",
              "mask_token_id", "eos_token_id"):
        config[k] = c[k]
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for f in ("generation_config.json", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"):
        if (fixture / f).exists():
            shutil.copy(fixture / f, out / f)

    d, mlp, vocab = c["d_model"], c["mlp_hidden_size"], c["embedding_size"]
    hd = d // c["n_heads"]
    kv = c["n_kv_heads"] * hd
    tensors = [("model.transformer.wte.weight", [vocab, d])]
    for i in range(c["n_layers"]):
        b = f"model.transformer.blocks.{i}."
        tensors += [(b + "attn_norm.weight", [d]), (b + "q_proj.weight", [d, d]),
                    (b + "k_proj.weight", [kv, d]), (b + "v_proj.weight", [kv, d]),
                    (b + "attn_out.weight", [d, d]), (b + "ff_norm.weight", [d]),
                    (b + "ff_proj.weight", [mlp, d]), (b + "up_proj.weight", [mlp, d]),
                    (b + "ff_out.weight", [d, mlp])]
    tensors += [("model.transformer.ln_f.weight", [d]), ("model.transformer.ff_out.weight", [vocab, d])]
    tensors.sort()
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, dims in tensors:
        n = int(np.prod(dims)) * 2
        header[name] = {"dtype": "BF16", "shape": dims, "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    rng = np.random.default_rng(args.seed)
    tmp = out / "model.safetensors.part"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for name, dims in tensors:
            if len(dims) == 1:
                a = np.ones(dims, np.float32)
            else:
                a = rng.standard_normal(dims, dtype=np.float32) * np.float32(0.02)
            f.write(bf16_bytes(a))
    tmp.rename(out / "model.safetensors")
    print(f"{out}: {sum(int(np.prod(x)) for _, x in tensors) / 1e9:.3f}B parameters")


if __name__ == "__main__":
    main()
