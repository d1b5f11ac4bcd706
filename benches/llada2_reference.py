#!/usr/bin/env python3
"""The LLaDA2 reference step: the authors' `modeling_llada2_moe.py` forward, as their
`generate()` runs it, against dcoder's block step of the same shape, measured in one run.

The authors' `LLaDA2MoeModelLM.generate()` (inclusionAI's HF file, vendored in ZHZisZZ/dllm
`dllm/pipelines/llada2/models/`) recomputes the whole window `x[:, :(block + 1) * block_length]`
at every denoising step, with the block-causal mask and the LM head on every row, and no cache.
(`generate()` builds its mask in bf16; in an f32 run the mask here is f32, which is all SDPA
accepts there.) This script imports that file (pass its folder with --modeling: fetch it, never commit it),
builds the model with the `llada2-mini` shape at a few layer counts with random bf16 weights
(16.3B weights in bf16 do not fit this machine's 24 GiB), times one forward per window length,
and extrapolates linearly in the number of mixture-of-experts layers to the real 20 layers
(1 dense + 19 MoE): t(20) = t(L1) + (20 - L1) * (t(L2) - t(L1)) / (L2 - L1).

Per answer at `--gen-length G` tokens after a `--prompt P`-token prompt with `--steps S` per
block of 32 (one token per step when S = 32, the worst case of the threshold rule), the
reference costs S * sum over blocks of t(window), the windows growing by 32 each block. dcoder's
answer is timed whole: `dcoder bench --random llada2-mini --quant TYPE --gen-length G --steps S
--prompt-tokens P` (exact block cache; one block of 32 rows per step).

  python3 benches/llada2_reference.py --modeling /tmp/ref/llada2 --python /tmp/venv-torch/bin/python \
      --dcoder target/release/dcoder --quant q4_k --threads 2
"""
import argparse, json, os, statistics, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# models.toml [shape.llada2-mini], the LLaDA2.0-mini config.json keys.
SHAPE = dict(hidden_size=2048, intermediate_size=5120, moe_intermediate_size=512,
             num_hidden_layers=20, num_attention_heads=16, num_key_value_heads=4, head_dim=128,
             partial_rotary_factor=0.5, vocab_size=157184, rope_theta=600000.0,
             rms_norm_eps=1e-6, first_k_dense_replace=1, num_experts=256,
             num_experts_per_tok=8, n_group=8, topk_group=4, num_shared_experts=1,
             routed_scaling_factor=2.5, score_function="sigmoid", use_qk_norm=True,
             tie_word_embeddings=False, max_position_embeddings=32768)


def torch_child(a):
    """Runs in the torch interpreter: prints {layers: {window: seconds}} as JSON."""
    import importlib.util, types
    import torch
    torch.set_num_threads(a.threads)
    pkg = types.ModuleType("llada2_ref")
    pkg.__path__ = [a.modeling]
    sys.modules["llada2_ref"] = pkg
    def load(name):
        spec = importlib.util.spec_from_file_location(f"llada2_ref.{name}", os.path.join(a.modeling, f"{name}.py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        return mod
    cfg_mod = load("configuration_llada2_moe")
    model_mod = load("modeling_llada2_moe")
    dtype = {"bf16": torch.bfloat16, "f32": torch.float32}[a.dtype]
    out = {}
    for layers in a.layers:
        torch.manual_seed(0)
        cfg = cfg_mod.LLaDA2MoeConfig(**{**SHAPE, "num_hidden_layers": layers})
        cfg._attn_implementation = "sdpa"
        torch.set_default_dtype(dtype)
        model = model_mod.LLaDA2MoeModelLM(cfg).eval()
        torch.set_default_dtype(torch.float32)
        times = {}
        for window in a.windows:
            blocks = window // 32
            block_mask = torch.tril(torch.ones(blocks, blocks))
            mask = (block_mask.repeat_interleave(32, 0).repeat_interleave(32, 1)
                    .unsqueeze(0).unsqueeze(0).log().to(dtype))
            ids = torch.randint(0, SHAPE["vocab_size"], (1, window))
            pos = torch.arange(window).unsqueeze(0)
            runs = []
            with torch.no_grad():
                for _ in range(a.repeats + 1):
                    t = time.perf_counter()
                    model(ids, attention_mask=mask, position_ids=pos)
                    runs.append(time.perf_counter() - t)
            times[window] = statistics.median(runs[1:])
            print(f"  torch {layers} layers, window {window}: {times[window]:.3f} s", file=sys.stderr)
        out[layers] = times
        del model
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modeling", required=True, help="folder with the authors' modeling_llada2_moe.py")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--dcoder", default=os.path.join(ROOT, "target/release/dcoder"))
    ap.add_argument("--quant", nargs="*", default=["q4_0"], help="dcoder types to run (none: the reference only)")
    ap.add_argument("--dtype", default="bf16", help="the reference's dtype (the cards load bf16)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--layers", nargs=2, type=int, default=[2, 3])
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--gen-length", type=int, default=128)
    ap.add_argument("--steps", type=int, default=32, help="denoising steps per block of 32")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--windows", nargs="*", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    first = a.prompt // 32
    blocks = range(first, (a.prompt + a.gen_length + 31) // 32)
    windows = [(b + 1) * 32 for b in blocks]
    if a.child:
        return torch_child(a)
    with open("/proc/cpuinfo") as f:
        words = set(f.read().split())
    print("CPU features:", " ".join(sorted(w for w in words if w == "avx2" or w.startswith("avx512"))))
    print(f"llada2-mini shape; prompt {a.prompt}, {a.gen_length} tokens, {a.steps} steps per block of 32, "
          f"{a.threads} threads; reference dtype {a.dtype}")
    child = [a.python, os.path.abspath(__file__), "--child", "--modeling", a.modeling, "--dtype", a.dtype,
             "--threads", str(a.threads), "--repeats", str(a.repeats), "--layers", *map(str, a.layers),
             "--prompt", str(a.prompt), "--gen-length", str(a.gen_length), "--windows", *map(str, windows)]
    measured = json.loads(subprocess.run(child, check=True, capture_output=True, text=True).stdout)
    (l1, t1), (l2, t2) = sorted((int(k), v) for k, v in measured.items())
    full = {w: t1[str(w)] + (SHAPE["num_hidden_layers"] - l1) * (t2[str(w)] - t1[str(w)]) / (l2 - l1)
            for w in windows}
    for w in windows:
        print(f"reference forward, window {w:4}: {l1} layers {t1[str(w)]:.3f} s, {l2} layers "
              f"{t2[str(w)]:.3f} s -> 20 layers {full[w]:.3f} s")
    reference = a.steps * sum(full.values())
    per_step = reference / (a.steps * len(windows))
    print(f"reference per answer: {reference:.1f} s ({a.steps * len(windows)} forwards, {per_step:.3f} s each)")
    for quant in a.quant:
        cmd = [a.dcoder, "bench", "--random", "llada2-mini", "--quant", quant, "--threads", str(a.threads),
               "--gen-length", str(a.gen_length), "--steps", str(a.steps), "--block-length", "32",
               "--prompt-tokens", str(a.prompt), "--no-early-stop", "--json"]
        r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        answer = r["forward_s"] * r["nfe"]
        print(f"dcoder {quant}: {answer:.1f} s per answer ({r['nfe']} forwards, {r['forward_s']:.3f} s each, "
              f"{r['tokens_per_s']:.2f} tok/s), peak RSS {r['peak_rss_bytes'] / 2**30:.2f} GiB, "
              f"weights {r['weight_bytes'] / 2**30:.2f} GiB, kernel {r['kernel']}: "
              f"reference / dcoder {reference / answer:.2f}x")


if __name__ == "__main__":
    main()
