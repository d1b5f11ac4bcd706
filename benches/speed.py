#!/usr/bin/env python3
"""Generation speed: dcoder's samplers against the PyTorch reference, in one run.

1. Block diffusion at the Tiny-A2D shape (`--random qwen3-0.6b`): 256 generated tokens in blocks
   of 32 after a 32-token prompt, at 1 token per step (256 steps) and 2 tokens per step (128
   steps), per dtype. The reference (dllm's BD3LM sampler) runs each denoising step as one
   forward of the 32-token block against the cached prefix; its time per answer is the sum of
   those steps, measured here with `torch_forward.py --seq 32 --past P` at every prefix length P
   the run passes through (prompt + 0, 32, ..., 224), times the steps per block. (dllm also
   recomputes the whole prefix at every block start; that is left out, in the reference's
   favour.)
2. LLaDA-small with Fast-dLLM's caches (`--random llada-small`): 256 tokens, blocks of 32, 64
   steps (8 per block), `--cache none|prefix|dual`. The reference without a cache runs every
   step as a full forward of prompt + canvas: `torch_forward.py --seq 288` times 64.
3. The same for the Dream family's network at Qwen2.5-0.5B's shape (`--random qwen2.5-0.5b`;
   with a cache, Fast-dLLM's Dream block sampler, whose block-start pass also decodes a token).
4. SDAR at SDAR-1.7B's shape (`--random sdar-1.7b`): 256 tokens in blocks of 4, 4 steps each,
   after a 32-token prompt. SDAR's generate.py runs each step, and each block's final store, as
   one forward of the 4-token block against the cached prefix: 5 passes per block at prefix
   32 + 4b. torch_forward.py has no such shape, so it is registered before its main() runs;
   the step time is measured at prefixes 32, 160 and 288 and interpolated linearly between.

Random weights cannot be confident, so both engines follow the fixed schedule (a fixed number of
tokens per step), as real models at temperature 0 do without a threshold.

  python3 benches/speed.py            # needs target/release/dcoder and .venv-torch (README)
"""
import argparse, os, sys

from vs_torch import ROOT, run_json


def torch_step(a, shape, seq, past, dtype):
    r = run_json([a.python, a.torch_script, "--shape", shape, "--seq", str(seq), "--past", str(past),
                  "--dtype", dtype, "--threads", str(a.threads), "--repeats", str(a.repeats)])
    return r["median_s"]


# SDAR-1.7B for torch_forward.py's SHAPES: Qwen3-1.7B (JetAstra/SDAR-1.7B-Chat config.json), untied head.
SDAR_SHAPE = '("qwen3", 2048, 28, 16, 8, 128, 6144, 151936, False, True, False)'


def torch_sdar_step(a, past, dtype):
    code = (f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(a.torch_script))!r}); "
            f"import torch_forward as tf; tf.SHAPES['sdar-1.7b'] = {SDAR_SHAPE}; "
            f"sys.argv = ['torch_forward.py', '--shape', 'sdar-1.7b', '--seq', '4', '--past', '{past}', "
            f"'--dtype', '{dtype}', '--threads', '{a.threads}', '--repeats', '{a.repeats}']; tf.main()")
    return run_json([a.python, "-c", code])["median_s"]


def dcoder_generate(a, shape, dtype, extra):
    return run_json([a.dcoder, "bench", "--random", shape, "--dtype", dtype, "--threads", str(a.threads),
                     "--prompt-tokens", "32", "--json"] + extra)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--dtype", nargs="+", default=["bf16", "f32"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-blocks", action="store_true", help="skip section 1")
    ap.add_argument("--skip-llada", action="store_true", help="skip section 2")
    ap.add_argument("--skip-dream", action="store_true", help="skip section 3")
    ap.add_argument("--skip-sdar", action="store_true", help="skip section 4")
    ap.add_argument("--python", default=os.path.join(ROOT, ".venv-torch/bin/python"))
    ap.add_argument("--torch-script", default=os.path.join(ROOT, "../shared/bench/torch_forward.py"))
    ap.add_argument("--dcoder", default=os.path.join(ROOT, "target/release/dcoder"))
    a = ap.parse_args()

    if not a.skip_blocks:
        block_diffusion(a)
    dtype = a.dtype[0]
    if not a.skip_llada:
        caches(a, "llada-small", dtype)
    if not a.skip_dream:
        caches(a, "qwen2.5-0.5b", dtype)
    if not a.skip_sdar:
        sdar(a, dtype)


def sdar(a, dtype):
    """Section 4: SDAR's 4-token blocks against the reference's block steps."""
    print(f"## SDAR, sdar-1.7b shape, 256 tokens, blocks of 4 in 4 steps, {dtype}, {a.threads} threads")
    at = {p: torch_sdar_step(a, p, dtype) for p in (32, 160, 288)}

    def step(past):  # linear between the measured prefixes
        lo, hi = (32, 160) if past <= 160 else (160, 288)
        return at[lo] + (at[hi] - at[lo]) * (past - lo) / (hi - lo)

    torch_s = sum(5 * step(32 + 4 * b) for b in range(64))
    r = dcoder_generate(a, "sdar-1.7b", dtype, ["--gen-length", "256"])
    torch_tps = 256 / torch_s
    print(f"dcoder {r['tokens_per_s']:.2f} tok/s ({r['forward_s']:.3f} s/forward, {r['nfe']} forwards); "
          f"torch {torch_tps:.2f} tok/s ({torch_s / 320:.3f} s/forward, 320 forwards): "
          f"{r['tokens_per_s'] / torch_tps:.2f}x", flush=True)


def block_diffusion(a):
    """Section 1: tokens per second of the BD3LM sampler against the reference's block steps."""
    print(f"## block diffusion, qwen3-0.6b shape, 256 tokens, blocks of 32, {a.threads} threads")
    print(f"{'dtype':<6}{'tok/step':>9}{'dcoder tok/s':>14}{'s/step':>8}{'torch tok/s':>13}{'s/step':>8}{'speed-up':>10}")
    best = {}
    for dtype in a.dtype:
        # The reference's cost per step at each block's prefix length (prompt 32 + earlier blocks).
        step_s = [torch_step(a, "qwen3-0.6b", 32, 32 + 32 * b, dtype) for b in range(8)]
        for steps, per_step in ((256, 1), (128, 2)):
            r = dcoder_generate(a, "qwen3-0.6b", dtype, ["--gen-length", "256", "--block-length", "32", "--steps", str(steps)])
            torch_s = sum(s * (steps // 8) for s in step_s)
            torch_tps = 256 / torch_s
            print(f"{dtype:<6}{per_step:>9}{r['tokens_per_s']:>14.2f}{r['forward_s']:>8.3f}{torch_tps:>13.2f}"
                  f"{torch_s / steps:>8.3f}{r['tokens_per_s'] / torch_tps:>9.2f}x", flush=True)
            for engine, tps in (("dcoder", r["tokens_per_s"]), ("torch", torch_tps)):
                key = (engine, per_step)
                best[key] = max(best.get(key, (0, None)), (tps, dtype))
    for per_step in (1, 2):
        (d, ddt), (t, tdt) = best[("dcoder", per_step)], best[("torch", per_step)]
        print(f"best dtypes, {per_step} token(s)/step: dcoder {d:.2f} tok/s ({ddt}), torch {t:.2f} tok/s ({tdt}): {d / t:.2f}x")


def caches(a, shape, dtype):
    """Fast-dLLM's caches against no cache and against the reference without one."""
    print(f"\n## Fast-dLLM caches, {shape} shape, 256 tokens, blocks of 32, 64 steps, {dtype}, {a.threads} threads")
    torch_full = torch_step(a, shape, 288, 0, dtype)
    print(f"torch, no cache (64 full forwards of 288 tokens): {64 * torch_full:.1f} s per answer")
    base = None
    for cache in ("none", "prefix", "dual"):
        r = dcoder_generate(a, shape, dtype, ["--gen-length", "256", "--block-length", "32", "--steps", "64", "--cache", cache])
        answer_s = 256 / r["tokens_per_s"]
        base = base or answer_s
        print(f"dcoder --cache {cache:<7}{answer_s:8.1f} s per answer, {r['nfe']} forwards, {r['forward_s']:.3f} s per forward, "
              f"{base / answer_s:.2f}x vs dcoder no cache, {64 * torch_full / answer_s:.2f}x vs torch no cache", flush=True)


if __name__ == "__main__":
    sys.exit(main())
