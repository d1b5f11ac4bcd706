#!/usr/bin/env python3
"""dcoder's forward pass against the PyTorch reference, measured in the same run.

For each (shape, tokens, dtype, threads) it times `dcoder bench --random SHAPE --forward N` and
`torch_forward.py --shape SHAPE --seq N` (the plain-torch body proven equal to the authors'
modeling code; ../shared/bench, see ../shared/docs/baselines.md) in the order torch, dcoder,
dcoder, torch, keeps each engine's better median, and prints the ratio dcoder / torch
(below 1 means dcoder is faster).

Two dcoder columns: `same work` puts every row through the LM head, exactly what the reference
forward computes; `step` is the forward dcoder's sampler actually runs per denoising step, with
the LM head on the current block's rows only (--block, default 32), against the same reference
forward (the reference samplers always compute every row's logits).

  python3 benches/vs_torch.py --shape llada-small --seq 160 544 --dtype f32 bf16 --threads 1 2

`--past N` times one block-diffusion step (N cached tokens before the `--seq` ones) on both
engines; `--quant TYPE...` adds dcoder rows with quantized weights (`--quant`, f32
activations), each against the best torch dtype of the same run:

  python3 benches/vs_torch.py --shape qwen3-0.6b --seq 32 --past 256 --dtype f32 bf16 \
      --threads 1 --quant q8_0 q4_k q4_0 --block 32

Needs a release build (cargo build --release) and a Python with torch + safetensors
(--python; README "Benchmarks" has the one-line venv).
"""
import argparse, itertools, json, os, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def torch_time(a, shape, seq, dtype, threads):
    r = run_json([a.python, a.torch_script, "--shape", shape, "--seq", str(seq), "--dtype", dtype,
                  "--threads", str(threads), "--repeats", str(a.repeats), "--past", str(a.past)])
    return r["median_s"]


def dcoder_time(a, shape, seq, dtype, threads, head_rows=None):
    extra = ["--head-rows", str(head_rows)] if head_rows else []
    weights = ["--dtype", dtype] if dtype in ("f32", "bf16") else ["--quant", dtype]
    r = run_json([a.dcoder, "bench", "--random", shape, "--forward", str(seq), "--past",
                  str(a.past), "--threads", str(threads), "--repeats", str(a.repeats),
                  "--json"] + weights + extra)
    return r["forward_s"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", nargs="+", default=["llada-small"])
    ap.add_argument("--seq", nargs="+", type=int, default=[160, 544])
    ap.add_argument("--dtype", nargs="+", default=["f32", "bf16"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, os.cpu_count()])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--past", type=int, default=0, help="cached tokens before --seq (one step)")
    ap.add_argument("--quant", nargs="*", default=[], help="dcoder-only quantized types")
    ap.add_argument("--block", type=int, default=32, help="LM-head rows of a sampler step")
    ap.add_argument("--python", default=os.path.join(ROOT, ".venv-torch/bin/python"))
    ap.add_argument("--torch-script", default=os.path.join(ROOT, "../shared/bench/torch_forward.py"))
    ap.add_argument("--dcoder", default=os.path.join(ROOT, "target/release/dcoder"))
    a = ap.parse_args()
    with open("/proc/cpuinfo") as f:
        words = set(f.read().split())
    print("CPU features:", " ".join(sorted(w for w in words if w == "avx2" or w.startswith("avx512"))))
    print(f"past {a.past}")
    print(f"{'shape':<13}{'tokens':>7}{'dtype':>6}{'threads':>8}{'torch s':>10}"
          f"{'dcoder s':>10}{'ratio':>7}{'step s':>9}{'ratio':>7}   (dcoder same work; dcoder step, head on {a.block} rows)")
    best = {}
    for shape, seq, threads, dtype in itertools.product(a.shape, a.seq, a.threads, a.dtype):
        t1 = torch_time(a, shape, seq, dtype, threads)
        d1 = dcoder_time(a, shape, seq, dtype, threads)
        s1 = dcoder_time(a, shape, seq, dtype, threads, a.block)
        s2 = dcoder_time(a, shape, seq, dtype, threads, a.block)
        d2 = dcoder_time(a, shape, seq, dtype, threads)
        t2 = torch_time(a, shape, seq, dtype, threads)
        t, d, s = min(t1, t2), min(d1, d2), min(s1, s2)
        print(f"{shape:<13}{seq:>7}{dtype:>6}{threads:>8}{t:>10.3f}{d:>10.3f}{d / t:>7.2f}{s:>9.3f}{s / t:>7.2f}", flush=True)
        key = (shape, seq, threads)
        bt, bd = best.get(key, (None, None))
        best[key] = (min(filter(None, [bt, (t, dtype)])), min(filter(None, [bd, (d, dtype)])))
    for shape, seq, threads in itertools.product(a.shape, a.seq, a.threads):
        t, tdt = best[(shape, seq, threads)][0]
        for q in a.quant:
            d = min(dcoder_time(a, shape, seq, q, threads), dcoder_time(a, shape, seq, q, threads))
            print(f"{shape:<13}{seq:>7}{q:>6}{threads:>8}  dcoder {d:.3f} s vs torch {t:.3f} s "
                  f"({tdt}): torch / dcoder {t / d:.2f}x", flush=True)
    if len(a.dtype) > 1:
        print("\nbest dtype of each engine:")
        for (shape, seq, threads), ((t, tdt), (d, ddt)) in best.items():
            print(f"{shape:<13}{seq:>7}{threads:>4} threads  torch {t:.3f} s ({tdt})  dcoder {d:.3f} s ({ddt})  ratio {d / t:.2f}")


if __name__ == "__main__":
    sys.exit(main())
