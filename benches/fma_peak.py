#!/usr/bin/env python3
"""How close a many-row quantized forward runs to this core's f32 FMA peak, measured in one run:
the ceiling any f32-FMA kernel (dcoder's, PyTorch's) has on this CPU, against dcoder's and
(optionally) PyTorch's forward of the same step.

    python3 benches/fma_peak.py --bin target/release/dcoder --shape qwen3-0.6b --rows 32 \
        --past 256 --quant q8_0 --python /tmp/venv-torch/bin/python \
        --torch-script ../shared/bench/torch_forward.py

The peak probe is a 20-line Rust program (written to a temporary folder, built with `rustc -O`):
12 independent AVX2 FMA chains of 8 lanes in registers, no memory traffic, one thread, the best
of three runs. Work per forward is counted as the matmuls' `2 · params · rows` FLOPs (the
`params` dcoder reports, the tied embedding counted once as the LM head); attention and the
element-wise layers are left out, so the GFLOP/s printed are a lower bound. Needs x86_64 with
AVX2 and FMA, and rustc.
"""
import argparse
import json
import os
import subprocess
import tempfile

from quant_forward import cpu_features

PROBE = r"""
use std::arch::x86_64::*;
#[target_feature(enable = "avx2,fma")]
unsafe fn chains(n: usize) -> f32 {
    let mut a = [_mm256_set1_ps(0.0); 12];
    let x = _mm256_set1_ps(1.000_000_1);
    let y = _mm256_set1_ps(0.999_999);
    for _ in 0..n {
        for v in a.iter_mut() {
            *v = _mm256_fmadd_ps(*v, x, y);
        }
    }
    let mut s = _mm256_setzero_ps();
    for v in a { s = _mm256_add_ps(s, v); }
    let mut o = [0f32; 8];
    _mm256_storeu_ps(o.as_mut_ptr(), s);
    o[0]
}
fn main() {
    assert!(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"));
    let n = 100_000_000;
    let t = std::time::Instant::now();
    let r = unsafe { chains(n) };
    let s = t.elapsed().as_secs_f64();
    println!("{} {}", (n * 12 * 16) as f64 / s / 1e9, r);
}
"""


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def peak_gflops():
    with tempfile.TemporaryDirectory() as d:
        src, exe = os.path.join(d, "peak.rs"), os.path.join(d, "peak")
        with open(src, "w") as f:
            f.write(PROBE)
        subprocess.run(["rustc", "-O", "-o", exe, src], check=True)
        return max(float(subprocess.run([exe], check=True, capture_output=True,
                                        text=True).stdout.split()[0]) for _ in range(3))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", default="target/release/dcoder")
    p.add_argument("--shape", default="qwen3-0.6b")
    p.add_argument("--rows", type=int, default=32)
    p.add_argument("--past", type=int, default=256)
    p.add_argument("--quant", nargs="+", default=["q8_0"])
    p.add_argument("--python", help="a Python with torch, to time the PyTorch forward too")
    p.add_argument("--torch-script", default="../shared/bench/torch_forward.py")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    peak = peak_gflops()
    print(f"CPU features: {cpu_features()}; 1 thread; shape {args.shape}, {args.rows} rows over "
          f"{args.past} cached")
    print(f"f32 FMA peak (probe): {peak:.1f} GFLOP/s")
    rows = []
    for quant in args.quant:
        r = run_json([args.bin, "bench", "--random", args.shape, "--forward", str(args.rows),
                      "--past", str(args.past), "--head-rows", str(args.rows), "--threads", "1",
                      "--repeats", str(args.repeats), "--quant", quant, "--json"])
        rows.append((f"dcoder {quant} ({r['kernel']})", r["forward_s"], r["params"]))
    params = rows[0][2]
    gflop = 2 * params * args.rows / 1e9
    torch_s = None
    if args.python:
        t = run_json([args.python, args.torch_script, "--shape", args.shape, "--seq",
                      str(args.rows), "--past", str(args.past), "--dtype", "f32", "--threads", "1",
                      "--repeats", str(args.repeats)])
        torch_s = t["median_s"]
        rows.append(("torch f32", torch_s, params))
    print(f"matmul work per forward: {gflop:.1f} GFLOP; at the peak: {gflop / peak:.3f} s")
    print()
    print("| engine | s / forward | GFLOP/s (matmuls) | of the FMA peak | torch / this |")
    print("|---|---:|---:|---:|---:|")
    for name, s, _ in rows:
        ratio = f"{torch_s / s:.2f}x" if torch_s else "-"
        print(f"| {name} | {s:.3f} | {gflop / s:.1f} | {gflop / s / peak:.0%} | {ratio} |")
    if torch_s:
        need = torch_s / 2
        print()
        print(f"2x PyTorch's f32 needs {need:.3f} s per forward: {gflop / need:.1f} GFLOP/s, "
              f"{gflop / need / peak:.0%} of the f32 FMA peak")


if __name__ == "__main__":
    main()
