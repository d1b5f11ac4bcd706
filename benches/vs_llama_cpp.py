#!/usr/bin/env python3
"""dcoder against llama.cpp's `llama-diffusion-cli` on the same GGUF files, measured in one run;
prints one markdown table with the ratios.

    python3 benches/vs_llama_cpp.py --dcoder target/release/dcoder \
        --llama-cli /tmp/lcpp/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/llama-diffusion-cli \
        --gguf /tmp/bench-gguf/llada-small-{f32,q8_0,q4_k_m}.gguf --threads 1 [--answer]

Per step, at equal work. llama.cpp recomputes the whole sequence every step (no KV cache) and
puts every position through the LM head; `-ub = -c = -b = --seq` makes the sequence exactly
`--seq` tokens (prompt and canvas), and its own "time per step" is read from its log. It includes
its sampling, which it also reports ("sampling time per step"); the step minus the sampling is the
forward pass, set against `dcoder bench --model FILE --forward SEQ --head-rows SEQ --json` (the
median of `--repeats` timed forwards after a warm-up, every row through the LM head). llama.cpp's
time per step is an average over its `--llama-steps` steps, the first of which includes its
one-off start-up (it does no warm-up).

Per answer (`--answer`): the same prompt length, canvas and number of steps; llama.cpp as it runs
(every step a full forward over prompt + canvas), dcoder with its caches (`--cache`) and blocks of
`--answer-block`. llama.cpp runs one block over the whole canvas: its cost per step does not depend
on the block layout, since each step recomputes everything, and one block avoids its rule that
prompt + canvas be a whole number of blocks. The prompt's length in tokens is what llama.cpp's chat
template and tokenizer make of `--prompt`, found by a one-step probe (`--diffusion-visual` prints
one character per canvas position); dcoder gets a random prompt of that many tokens.
"""
import argparse
import json
import os
import re
import subprocess


def cpu_features():
    try:
        flags = open("/proc/cpuinfo").read().split()
    except OSError:
        return "?"
    return " ".join(sorted({f for f in flags if f == "avx2" or f.startswith("avx512")})) or "none"


def llama(args, gguf, ub, steps, block, visual=False):
    cmd = [args.llama_cli, "-m", gguf, "-p", args.prompt, "-ub", str(ub), "-c", str(ub), "-b", str(ub),
           "--diffusion-steps", str(steps), "--diffusion-block-length", str(block),
           "-t", str(args.threads), "--temp", "0", "-fa", "off"]
    if visual:
        cmd.append("--diffusion-visual")
    env = dict(os.environ)
    lib = os.path.dirname(os.path.abspath(args.llama_cli))
    env["LD_LIBRARY_PATH"] = lib + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, errors="replace")
    log = p.stdout + p.stderr
    if p.returncode != 0:
        raise SystemExit(f"llama-diffusion-cli failed on {gguf} (exit {p.returncode}):\n{log[-2000:]}")
    return log


def llama_times(log, gguf):
    m = re.search(r"total time: ([\d.]+)ms, time per step: ([\d.]+)ms, sampling time per step: ([\d.]+)ms", log)
    if not m:
        raise SystemExit(f"no 'time per step' in llama-diffusion-cli's log for {gguf}:\n{log[-2000:]}")
    total, step, sampling = (float(x) / 1000 for x in m.groups())
    return {"total_s": total, "step_s": step, "sampling_s": sampling, "forward_s": step - sampling}


def prompt_tokens(args, gguf):
    """How many tokens llama.cpp makes of --prompt: a one-step run whose visual mode prints, before
    the first step, one space per masked canvas position after a leading space."""
    ub = args.probe_ub
    log = llama(args, gguf, ub, 1, ub, visual=True)
    lines = log.split("\n")
    for i, line in enumerate(lines[:-1]):
        if "diffusion step: 0/" in line:
            # The canvas line, after the log's optional "0.00.669.084 I " prefix.
            m = re.match(r"^(?:[\d.]+ I )?( +)$", lines[i + 1])
            if m and 0 < len(m.group(1)) - 1 < ub:
                return ub - (len(m.group(1)) - 1)
    raise SystemExit(f"could not find the prompt length of {gguf} from a --diffusion-visual probe; "
                     f"raise --probe-ub above the prompt's length")


def dcoder(args, gguf, extra):
    cmd = [args.dcoder, "bench", "--model", gguf, "--threads", str(args.threads), "--json"] + extra
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"dcoder bench failed on {gguf} (exit {p.returncode}): {p.stderr.strip()}")
    return json.loads(p.stdout)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dcoder", default="target/release/dcoder")
    p.add_argument("--llama-cli", required=True, help="llama.cpp's build/bin/llama-diffusion-cli")
    p.add_argument("--gguf", nargs="+", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seq", type=int, default=160, help="tokens per step (prompt + canvas)")
    p.add_argument("--block", type=int, default=32, help="llama.cpp's block length for the per-step runs")
    p.add_argument("--llama-steps", type=int, default=0,
                   help="llama.cpp's steps per run, a multiple of seq/block (default: seq/block, one per block)")
    p.add_argument("--repeats", type=int, default=3, help="dcoder's timed forwards (median)")
    p.add_argument("--prompt", default="Write a Python function that reverses a string.")
    p.add_argument("--answer", action="store_true", help="also time a whole answer on each file")
    p.add_argument("--answer-gen", type=int, default=256, help="canvas tokens of the answer")
    p.add_argument("--answer-steps", type=int, default=64, help="denoising steps of the answer")
    p.add_argument("--answer-block", type=int, default=32, help="dcoder's block length for the answer")
    p.add_argument("--cache", default="dual", help="dcoder's --cache for the answer")
    p.add_argument("--probe-ub", type=int, default=64, help="sequence of the prompt-length probe")
    args = p.parse_args()
    if args.seq % args.block:
        raise SystemExit(f"--seq {args.seq} is not a whole number of --block {args.block}")
    steps = args.llama_steps or args.seq // args.block
    if steps % (args.seq // args.block):
        raise SystemExit(f"--llama-steps {steps} is not a multiple of the {args.seq // args.block} blocks")

    rows = []
    for gguf in args.gguf:
        lt = llama_times(llama(args, gguf, args.seq, steps, args.block), gguf)
        d = dcoder(args, gguf, ["--forward", str(args.seq), "--head-rows", str(args.seq),
                                "--repeats", str(args.repeats)])
        row = {"gguf": gguf, "llama": lt, "dcoder": d}
        if args.answer:
            n_in = prompt_tokens(args, gguf)
            ub = n_in + args.answer_gen
            la = llama_times(llama(args, gguf, ub, args.answer_steps, ub), gguf)
            da = dcoder(args, gguf, ["--prompt-tokens", str(n_in), "--gen-length", str(args.answer_gen),
                                     "--block-length", str(args.answer_block), "--steps",
                                     str(args.answer_steps), "--cache", args.cache, "--no-early-stop",
                                     "--temperature", "0"])
            row["answer"] = {"prompt_tokens": n_in, "llama": la, "dcoder": da,
                             "dcoder_s": da["forward_s"] * da["nfe"]}
        rows.append(row)

    print(f"CPU features: {cpu_features()}; {args.threads} thread(s); per step: {args.seq} tokens, "
          f"every row through the LM head; llama.cpp {steps} steps per run, dcoder median of {args.repeats}")
    print()
    print("| file | dcoder weights / kernel | llama.cpp s / step | of which sampling "
          "| llama.cpp s / forward | dcoder s / forward | llama / dcoder |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        lt, d = r["llama"], r["dcoder"]
        print(f"| {os.path.basename(r['gguf'])} | {d['weights']} / {d['kernel']} "
              f"| {lt['step_s']:.3f} | {lt['sampling_s']:.3f} | {lt['forward_s']:.3f} | {d['forward_s']:.3f} "
              f"| {lt['forward_s'] / d['forward_s']:.2f}x |")
    if args.answer:
        print()
        print(f"Per answer: {args.answer_gen} tokens in {args.answer_steps} steps; llama.cpp as it runs "
              f"(every step over prompt + canvas), dcoder --cache {args.cache} --block-length {args.answer_block}")
        print()
        print("| file | prompt tokens | llama.cpp s / answer | dcoder s / answer | dcoder forwards "
              "| dcoder peak RSS | llama / dcoder |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            a = r["answer"]
            print(f"| {os.path.basename(r['gguf'])} | {a['prompt_tokens']} | {a['llama']['total_s']:.2f} "
                  f"| {a['dcoder_s']:.2f} | {a['dcoder']['nfe']} | {a['dcoder']['peak_rss_bytes'] / 2**20:.0f} MiB "
                  f"| {a['llama']['total_s'] / a['dcoder_s']:.2f}x |")


if __name__ == "__main__":
    main()
