#!/usr/bin/env python3
"""Forward passes of random weights of one shape in f32, bf16 and quantized types, interleaved in
rounds so that every ratio compares runs made side by side; prints a markdown table with each
type's time as a ratio against f32 of the same row count.

    python3 benches/quant_forward.py --bin target/release/dcoder --shape qwen3-0.6b --rows 1 4 32 \
        --past 256 --threads 1

Each run is `dcoder bench --random SHAPE --forward ROWS --past PAST --head-rows ROWS --threads T
--repeats 3 --json` plus `--dtype f32|bf16` or `--quant TYPE`; a type's time is the best median
over the rounds. `TYPE@candle` / `TYPE@dots` / `TYPE@tiled` force one kernel for every quantized
product (`--qmatmul`: candle's `QMatMul`, candle's dot products on the weights as loaded, dcoder's
tiled kernel), to compare them in the same run. The first line
printed names the CPU's feature set.
"""
import argparse
import json
import subprocess


def run(args, rows, kind):
    kind, _, kernel = kind.partition("@")
    flag = ["--dtype", kind] if kind in ("f32", "bf16") else ["--quant", kind]
    if kernel:
        flag += ["--qmatmul", kernel]
    cmd = [args.bin, "bench", "--random", args.shape, "--forward", str(rows), "--past",
           str(args.past), "--head-rows", str(rows), "--threads", str(args.threads), "--repeats",
           "3", "--json"] + flag
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    report = json.loads(out)
    if kernel:
        report["kernel"] += f" ({kernel})"
    return report


def cpu_features():
    with open("/proc/cpuinfo") as f:
        words = set(f.read().split())
    return " ".join(sorted(w for w in words if w == "avx2" or w.startswith("avx512"))) or "none"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", default="target/release/dcoder")
    p.add_argument("--shape", default="qwen3-0.6b")
    p.add_argument("--rows", type=int, nargs="+", default=[1, 4, 32])
    p.add_argument("--past", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--types", nargs="+", default=["f32", "bf16", "q8_0", "q6_k", "q4_k", "q4_0"])
    args = p.parse_args()
    best = {}
    for rows in args.rows:
        for _ in range(args.rounds):
            for kind in args.types:
                r = run(args, rows, kind)
                key = (rows, kind)
                if key not in best or r["forward_s"] < best[key]["forward_s"]:
                    best[key] = r
    print(f"CPU features: {cpu_features()}; {args.threads} thread(s); shape {args.shape}, past {args.past}")
    print()
    print(f"| rows | type | kernel | weights | peak RSS | s / forward | f32 / this |")
    print("|---:|---|---|---:|---:|---:|---:|")
    for rows in args.rows:
        base = best[(rows, "f32")]["forward_s"]
        for kind in args.types:
            r = best[(rows, kind)]
            print(f"| {rows} | {r['weights']} | {r['kernel']} | {r['weight_bytes'] / 2**20:.0f} MiB "
                  f"| {r['peak_rss_bytes'] / 2**20:.0f} MiB | {r['forward_s']:.4f} "
                  f"| {base / r['forward_s']:.2f}x |")


if __name__ == "__main__":
    main()
