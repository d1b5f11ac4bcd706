#!/usr/bin/env python3
"""What `dcoder serve` adds over an in-process run, measured in one run (stdlib only).

Starts `dcoder serve` on a fixture model and times, for the same request and settings:
  - the in-process loop (`dcoder --json`'s elapsed_s, the same engine without HTTP);
  - a non-streaming request: client wall time and the worker's own loop time (dcoder_run);
  - a diffusing stream (a JSON frame per step): the same two numbers;
  - requests per second, sequential and with 4 concurrent clients.
Added latency per request = wall - loop; the per-step cost of streaming every step =
(diffusing loop - non-streaming loop) / steps. Against a real model's step the ratio is what
matters: the step time of `dcoder bench --random qwen3-0.6b --forward N` is measured in the same
run (a random shape has no tokenizer, so it cannot be served itself; the server's per-step work
depends on the canvas length only, which is the same).

Usage: benches/serve_overhead.py [--binary target/release/dcoder] [--model tests/fixtures/llada-tiny]
         [--gen-length 64] [--repeats 5] [--shape qwen3-0.6b]
"""

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import threading
import time


def start(binary, model, flags):
    proc = subprocess.Popen(
        [binary, "serve", "--model", model, "--port", "0", *flags],
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in proc.stderr:
        if "http://" in line:
            addr = line.split("http://", 1)[1].split("/", 1)[0]
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            host, port = addr.rsplit(":", 1)
            return proc, host, int(port)
    raise SystemExit("dcoder serve did not start")


def post(host, port, body):
    conn = http.client.HTTPConnection(host, port, timeout=600)
    t = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if not body.get("stream"):
        data = json.loads(resp.read())
        return time.perf_counter() - t, data["dcoder"], 0
    run, frames, bytes_ = None, 0, 0
    for raw in resp:
        bytes_ += len(raw)
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        frames += "dcoder" in chunk
        run = chunk.get("dcoder_run") or run
    return time.perf_counter() - t, run, bytes_ / max(frames, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/dcoder")
    ap.add_argument("--model", default="tests/fixtures/llada-tiny")
    ap.add_argument("--gen-length", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--shape", default="qwen3-0.6b")
    a = ap.parse_args()
    g = str(a.gen_length)
    flags = ["--gen-length", g, "--steps", g, "--block-length", g, "--suppress-eos", "--no-early-stop"]
    prompt = "write a function that reverses a string"
    cli = []
    for _ in range(a.repeats):
        out = subprocess.run([a.binary, "--model", a.model, *flags, "--json", prompt], capture_output=True, text=True, check=True)
        cli.append(json.loads(out.stdout)["elapsed_s"])
    proc, host, port = start(a.binary, a.model, flags)
    try:
        body = {"messages": [{"role": "user", "content": prompt}]}
        post(host, port, body)  # warm-up
        whole = [post(host, port, body) for _ in range(a.repeats)]
        diff = [post(host, port, {**body, "stream": True, "diffusing": True}) for _ in range(a.repeats)]
        t = time.perf_counter()
        for _ in range(a.repeats):
            post(host, port, body)
        seq_rps = a.repeats / (time.perf_counter() - t)
        t = time.perf_counter()
        threads = [threading.Thread(target=post, args=(host, port, body)) for _ in range(4)]
        [th.start() for th in threads]
        [th.join() for th in threads]
        conc_rps = 4 / (time.perf_counter() - t)
    finally:
        proc.kill()
    steps = whole[0][1]["steps"]
    med = statistics.median
    cli_loop = med(cli)
    whole_wall, whole_loop = med(w for w, _, _ in whole), med(r["elapsed_s"] for _, r, _ in whole)
    diff_wall, diff_loop = med(w for w, _, _ in diff), med(r["elapsed_s"] for _, r, _ in diff)
    frame_bytes = med(b for _, _, b in diff)
    per_step_stream = (diff_loop - whole_loop) / steps
    bench = subprocess.run(
        [a.binary, "bench", "--random", a.shape, "--forward", str(a.gen_length + 16), "--repeats", "2", "--json"],
        capture_output=True, text=True, check=True,
    )
    shape_step = json.loads(bench.stdout)
    shape_s = shape_step["forward_s"]
    cpu = subprocess.run(
        "grep -o -w 'avx512[a-z_0-9]*\\|avx2' /proc/cpuinfo | sort -u | tr '\\n' ' '",
        shell=True, capture_output=True, text=True,
    ).stdout.strip()
    report = {
        "cpu_features": cpu,
        "model": a.model,
        "gen_length": a.gen_length,
        "steps": steps,
        "in_process_loop_s": cli_loop,
        "server_loop_s": whole_loop,
        "server_wall_s": whole_wall,
        "added_latency_ms": (whole_wall - whole_loop) * 1e3,
        "diffusing_loop_s": diff_loop,
        "diffusing_wall_s": diff_wall,
        "diffusing_frame_bytes": frame_bytes,
        "stream_cost_per_step_ms": per_step_stream * 1e3,
        "tiny_step_ms": whole_loop / steps * 1e3,
        "requests_per_s_sequential": seq_rps,
        "requests_per_s_4_clients": conc_rps,
        "shape": a.shape,
        "shape_forward_s": shape_s,
        "shape_bench": shape_step,
    }
    if shape_s:
        report["overhead_per_step_vs_shape_pct"] = 100 * max(per_step_stream, 0) / shape_s + 100 * (whole_wall - whole_loop) / steps / shape_s
    json.dump(report, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
