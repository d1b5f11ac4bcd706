#!/usr/bin/env bash
# The GPU check, prepared to run in one go on a machine with an NVIDIA GPU (an H100/H200, 16
# cores, package registries but no other network):
#   1. installs what `--features cuda` needs: nvcc and the CUDA 13.0 libraries from NVIDIA's PyPI
#      wheels (docs: shared crates.md section 9; Debian has no CUDA 13), unless CUDA_HOME or
#      /usr/local/cuda already holds a usable toolkit; g++ from apt if missing;
#   2. builds `cargo build --release --locked --features cuda`;
#   3. runs every single-prompt parity case of tests/fixtures through the CLI on the GPU, in f32
#      and bf16, and reports per fixture how many cases and tokens agree with the reference
#      (bf16 may pick other tokens, so disagreement is reported, never fatal);
#   4. times `dcoder bench --random` on qwen3-0.6b, sdar-1.7b and llada-8b (short generations).
# stdout gets exactly one JSON object at the end (also on failure, naming the stage); progress
# goes to stderr and the logs to $GPU_CHECK_DIR/logs. About 5-8 minutes on one H100, the cold
# build included. Safe to rerun: the wheels are kept, the build is incremental, results are new.
#
# Usage: benches/gpu.sh [--dry-run]
#   --dry-run (or GPU_CHECK_DRY_RUN=1): the same pipeline on the CPU without CUDA (plain release
#   build, --device cpu, f32, small shapes and 8-token generations), as a smoke test anywhere.
# Environment:
#   GPU_CHECK_DIR     work folder (default: $CARGO_TARGET_DIR or target/, then gpu-check)
#   CUDA_COMPUTE_CAP  e.g. 90 (default: nvidia-smi's, else 90)
#   CUDA_HOME         a CUDA 12.x-13.4 toolkit with cuBLAS/cuRAND to use instead of the wheels
#   GPU_CHECK_JOBS    parity cases run at once (default 8; 2 on --dry-run)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

DRY_RUN=${GPU_CHECK_DRY_RUN:-0}
for arg in "$@"; do
  case $arg in
    --dry-run) DRY_RUN=1 ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d'
      exit 0
      ;;
    *)
      echo "error: unknown argument $arg (expected --dry-run)" >&2
      exit 2
      ;;
  esac
done

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=${GPU_CHECK_DIR:-$TARGET_DIR/gpu-check}
LOGS=$WORK/logs
RESULTS=$WORK/results
mkdir -p "$LOGS"
rm -rf "$RESULTS"
mkdir -p "$RESULTS"
HF_TMP=$(mktemp -d)

# stdout is kept for the summary (fd 3); everything else, this script's echo too, goes to stderr.
exec 3>&1 1>&2

STAGE=setup
STARTED=$(date +%s)

# One JSON object from what the stages left in $RESULTS.
finish() {
  local rc=$?
  rm -rf "$HF_TMP"
  python3 - "$RESULTS" "$STAGE" "$rc" "$DRY_RUN" "$LOGS" "$(($(date +%s) - STARTED))" >&3 <<'PY' || rc=1
import json, os, sys
results, stage, rc, dry, logs, secs = sys.argv[1:7]
def load(name):
    path = os.path.join(results, name)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as e:
        return {"unreadable": f"{path}: {e}"}
out = {
    "ok": rc == "0",
    "mode": "dry-run" if dry == "1" else "gpu",
    "failed_stage": None if rc == "0" else stage,
    "exit_code": int(rc),
    "seconds": int(secs),
    "logs": logs,
}
for key in ("machine", "cuda", "build", "parity", "bench"):
    value = load(key + ".json")
    if value is not None:
        out[key] = value
error = os.path.join(results, "error.txt")
if os.path.exists(error):
    with open(error) as f:
        out["error"] = f.read().strip().splitlines()[-40:]
print(json.dumps(out))
PY
  exit "$rc"
}
trap finish EXIT
trap 'exit 143' TERM INT

# Fails the current stage with `message` and the tail of `log` in the summary.
fail() {
  local message=$1 log=${2:-}
  {
    echo "$message"
    if [ -n "$log" ] && [ -f "$log" ]; then tail -n 30 "$log"; fi
  } >"$RESULTS/error.txt"
  echo "error: $message${log:+ (log: $log)}"
  exit 1
}

# Seconds since `$1` (a `date +%s`).
since() { echo $(($(date +%s) - $1)); }

if [ -x "$HOME/.cargo/bin/cargo" ]; then PATH=$HOME/.cargo/bin:$PATH; fi
command -v cargo >/dev/null 2>&1 || fail "cargo not found: this script needs a Rust toolchain (rust-version in Cargo.toml)"
command -v python3 >/dev/null 2>&1 || { echo "error: python3 not found" >&2; exit 1; }

if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
# nvcc needs a host C++ compiler; ring and the linker need gcc.
if ! command -v g++ >/dev/null 2>&1; then
  echo "== installing g++"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq g++ >/dev/null
fi

# ---------------------------------------------------------------------------------------------
STAGE=cuda
if [ "$DRY_RUN" = 1 ]; then
  DEVICE=cpu
  FEATURES=()
  DTYPES=f32
  JOBS=${GPU_CHECK_JOBS:-2}
  rm -f "$LOGS/nvidia-smi.txt"
  echo '{"source": "none (dry run)"}' >"$RESULTS/cuda.json"
else
  DEVICE=cuda
  FEATURES=(--features cuda)
  DTYPES=f32,bf16
  JOBS=${GPU_CHECK_JOBS:-8}
  command -v nvidia-smi >/dev/null 2>&1 || fail "nvidia-smi not found: no NVIDIA driver here (try --dry-run)"
  nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader \
    >"$LOGS/nvidia-smi.txt" 2>&1 || fail "nvidia-smi cannot query the GPU" "$LOGS/nvidia-smi.txt"
  if [ -z "${CUDA_COMPUTE_CAP:-}" ]; then
    CUDA_COMPUTE_CAP=$(head -n1 "$LOGS/nvidia-smi.txt" | awk -F', *' '{print $4}' | tr -d ' .')
    CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
  fi
  export CUDA_COMPUTE_CAP
  DRIVER_CUDA=$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9.]*\).*/\1/p' | head -n1 || true)

  # A toolkit is usable when it has nvcc, the headers and the libraries the binary links, and
  # its nvcc is 12.0-13.4 (cudarc 0.19.10 knows no newer) and no newer than the driver (its PTX
  # would not load).
  version_of() { "$1/bin/nvcc" --version 2>/dev/null | sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p'; }
  as_int() { awk -F. '{printf "%d", $1 * 100 + $2}' <<<"$1"; }
  usable() {
    local home=$1 v lib
    [ -x "$home/bin/nvcc" ] && [ -f "$home/include/cuda.h" ] || return 1
    v=$(version_of "$home")
    [ -n "$v" ] || return 1
    [ "$(as_int "$v")" -ge 1200 ] && [ "$(as_int "$v")" -le 1304 ] || return 1
    if [ -n "$DRIVER_CUDA" ] && [ "$(as_int "$v")" -gt "$(as_int "$DRIVER_CUDA")" ]; then return 1; fi
    for lib in cudart cublas cublasLt curand nvrtc; do
      compgen -G "$home/lib64/lib$lib.so*" >/dev/null || compgen -G "$home/lib/lib$lib.so*" >/dev/null || return 1
    done
  }
  CUDA_SOURCE=""
  for home in ${CUDA_HOME:+"$CUDA_HOME"} /usr/local/cuda; do
    if usable "$home"; then
      CUDA_SOURCE=system
      CH=$home
      break
    fi
  done
  if [ -z "$CUDA_SOURCE" ]; then
    # NVIDIA's CUDA 13.0 wheels (crates.md section 9): 13.0 matches driver 580 and cudarc.
    CUDA_SOURCE=wheels
    PINS="nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85 nvidia-nvvm==13.0.88 nvidia-cuda-nvrtc==13.0.88 nvidia-curand==10.4.0.35 nvidia-cublas==13.0.0.19"
    WHEELS=$WORK/cuda-wheels
    if [ "$(cat "$WHEELS/.pins" 2>/dev/null || true)" != "$PINS" ]; then
      echo "== installing the CUDA 13.0 wheels into $WHEELS"
      PY=""
      for candidate in python3 /opt/torch/.venv/bin/python3; do
        if "$candidate" -m pip --version >/dev/null 2>&1; then
          PY=$candidate
          break
        fi
      done
      [ -n "$PY" ] || fail "no python3 with pip to install the CUDA wheels"
      rm -rf "$WHEELS"
      # --target installs outside any environment (no PEP 668 check), into one fresh tree.
      # shellcheck disable=SC2086 # PINS is a list of requirements.
      "$PY" -m pip install -q --disable-pip-version-check --no-deps --target "$WHEELS" $PINS \
        >"$LOGS/pip.log" 2>&1 || fail "pip could not install the CUDA wheels" "$LOGS/pip.log"
      echo "$PINS" >"$WHEELS/.pins"
    fi
    CU=$WHEELS/nvidia/cu13
    [ -x "$CU/bin/nvcc" ] || fail "the wheels have no nvcc at $CU/bin/nvcc"
    # A CUDA_HOME laid out as the build scripts expect: the wheels ship versioned libraries
    # only, and no libcuda.so (the driver's, linked by name here).
    CH=$WORK/cudahome
    rm -rf "$CH"
    mkdir -p "$CH/lib"
    for d in bin include nvvm; do ln -s "$CU/$d" "$CH/$d"; done
    ln -s lib "$CH/lib64"
    for f in "$CU"/lib/lib*.so.*; do
      base=${f##*/}
      ln -sf "$f" "$CH/lib/${base%%.so.*}.so"
    done
    LIBCUDA=$(ldconfig -p 2>/dev/null | awk '/libcuda\.so\.1 /{print $NF; exit}' || true)
    for candidate in /usr/local/nvidia/lib64/libcuda.so.1 /usr/lib/x86_64-linux-gnu/libcuda.so.1 /usr/lib64/libcuda.so.1; do
      if [ -z "$LIBCUDA" ] && [ -e "$candidate" ]; then LIBCUDA=$candidate; fi
    done
    [ -n "$LIBCUDA" ] || fail "the driver's libcuda.so.1 is not on this machine"
    ln -s "$LIBCUDA" "$CH/lib/libcuda.so"
  fi
  export CUDA_HOME=$CH CUDA_PATH=$CH CUDA_ROOT=$CH PATH=$CH/bin:$PATH
  # The linker finds -lcuda, -lcublas, ... here whatever search paths the build scripts emit;
  # the loader finds the toolkit's libraries here (libcuda.so.1 is the driver's own).
  export LIBRARY_PATH=$CH/lib64:$CH/lib64/stubs:$CH/lib:${LIBRARY_PATH:-}
  export LD_LIBRARY_PATH=$CH/lib64:$CH/lib:${LD_LIBRARY_PATH:-}
  # candle-kernels compiles its CUDA sources in parallel; cudaforge defaults to half the cores.
  export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-$(nproc)}
  NVCC_VERSION=$(version_of "$CH")
  python3 -c 'import json, sys; print(json.dumps(dict(zip(["source", "home", "nvcc", "compute_cap", "driver_cuda"], sys.argv[1:]))))' \
    "$CUDA_SOURCE" "$CH" "$NVCC_VERSION" "$CUDA_COMPUTE_CAP" "$DRIVER_CUDA" >"$RESULTS/cuda.json"
  echo "== CUDA $NVCC_VERSION ($CUDA_SOURCE, $CH), compute capability $CUDA_COMPUTE_CAP"
fi

python3 - "$LOGS/nvidia-smi.txt" "$(nproc)" >"$RESULTS/machine.json" <<'PY'
import json, os, sys
gpu = None
if os.path.exists(sys.argv[1]):
    with open(sys.argv[1]) as f:
        fields = [x.strip() for x in f.readline().split(",")]
    gpu = dict(zip(["name", "memory", "driver", "compute_cap"], fields))
print(json.dumps({"cpus": int(sys.argv[2]), "gpu": gpu}))
PY

# ---------------------------------------------------------------------------------------------
STAGE=build
echo "== cargo build --release --locked ${FEATURES[*]:-} (log: $LOGS/build.log)"
t0=$(date +%s)
cargo build --release --locked "${FEATURES[@]}" >"$LOGS/build.log" 2>&1 ||
  fail "cargo build --release ${FEATURES[*]:-} failed" "$LOGS/build.log"
BIN=$TARGET_DIR/release/dcoder
[ -x "$BIN" ] || fail "no binary at $BIN"
if ldd "$BIN" >"$LOGS/ldd.txt" 2>&1 && grep -q "not found" "$LOGS/ldd.txt"; then
  fail "the binary's libraries are not all found" "$LOGS/ldd.txt"
fi
"$BIN" --version >"$LOGS/version.txt" 2>&1 || fail "the binary does not start" "$LOGS/version.txt"
python3 -c 'import json, sys; print(json.dumps({"seconds": int(sys.argv[1]), "features": sys.argv[2], "binary": sys.argv[3]}))' \
  "$(since "$t0")" "${FEATURES[*]:-}" "$BIN" >"$RESULTS/build.json"

# ---------------------------------------------------------------------------------------------
STAGE=parity
echo "== parity cases through the CLI on $DEVICE ($DTYPES)"
# The flags of a case are those of tests/cli.rs `cli_args` (fixtures README section 8).
python3 - "$BIN" "$ROOT/tests/fixtures" "$DEVICE" "$DTYPES" "$JOBS" "$HF_TMP" "$LOGS/parity.log" \
  >"$RESULTS/parity.json" <<'PY' || fail "the parity stage broke" "$LOGS/parity.log"
import concurrent.futures, json, os, subprocess, sys, time

binary, root, device, dtypes, jobs, hf_home, log_path = sys.argv[1:8]

def flag_value(v):
    return json.dumps(v)

def cli_args(case):
    s = case.get("settings", {})
    sampler = case.get("sampler")
    llada_like = {"llada.generate", "fastdllm.generate", "fastdllm.generate_with_prefix_cache",
                  "fastdllm.generate_with_dual_cache", "dllm.BD3LMSampler.sample",
                  "sdar.block_diffusion_generate"}
    dream_like = {"dream.diffusion_generate", "fastdllm.dream.generate_with_prefix_cache",
                  "fastdllm.dream.generate_with_dual_cache"}
    if sampler in llada_like:
        if not isinstance(s.get("remasking"), str):
            return None
        strategy = "random" if s["remasking"] == "random" else "confidence"
    elif sampler in dream_like:
        alg = s.get("alg")
        if not isinstance(alg, str):
            return None
        strategy = {"maskgit_plus": "confidence", "confidence_threshold": "confidence",
                    "topk_margin": "margin"}.get(alg, alg)
    else:
        return None
    args = ["--json", "--temperature", "0", "--seed", "0"]
    def flag(name, key):
        if s.get(key) is not None:
            args.extend(["--" + name, flag_value(s[key])])
    flag("gen-length", "gen_length")
    flag("gen-length", "max_new_tokens")
    flag("steps", "steps")
    flag("block-length", "block_length")
    flag("block-length", "block_size")
    flag("steps-per-block", "steps_per_block")
    flag("threshold", "threshold")
    cfg = s.get("cfg_scale")
    if isinstance(cfg, (int, float)) and not isinstance(cfg, bool) and cfg > 0:
        flag("cfg-scale", "cfg_scale")
    flag("eps", "eps")
    flag("alg-temp", "alg_temp")
    flag("top-p", "top_p")
    flag("top-k", "top_k")
    args.extend(["--strategy", strategy])
    cache = {"fastdllm.generate_with_prefix_cache": "prefix",
             "fastdllm.dream.generate_with_prefix_cache": "prefix",
             "fastdllm.generate_with_dual_cache": "dual",
             "fastdllm.dream.generate_with_dual_cache": "dual",
             "fastdllm.generate": "none"}.get(sampler)
    if cache:
        args.extend(["--cache", cache])
    if s.get("logits_eos_inf") is True:
        args.append("--suppress-eos")
    if s.get("confidence_eos_eot_inf") is True:
        args.append("--eos-last")
    if case.get("apply_chat_template") is False:
        if not isinstance(case.get("prompt_text"), str):
            return None
        args.extend(["--no-chat-template", case["prompt_text"]])
    else:
        messages = case.get("messages")
        if not isinstance(messages, list):
            return None
        system = next((m for m in messages if m.get("role") == "system"), None)
        if system is not None:
            if not isinstance(system.get("content"), str):
                return None
            args.extend(["--system", system["content"]])
        user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
        if user is None or not isinstance(user.get("content"), str):
            return None
        args.append(user["content"])
    return args

runs = []
for fixture in sorted(os.listdir(root)):
    for name in ("cases.json", "fastdllm-cases.json"):
        path = os.path.join(root, fixture, name)
        if not os.path.isfile(path):
            continue
        with open(path) as f:
            cases = json.load(f).get("cases", [])
        for case in cases:
            args = cli_args(case)
            if args is None:
                continue
            for dtype in dtypes.split(","):
                runs.append((f"{fixture}/{name}", dtype, case, args))

env = dict(os.environ, HF_HOME=hf_home, HF_HUB_OFFLINE="1")
env.pop("DCODER_MODEL", None)

def run(item):
    key, dtype, case, args = item
    fixture_dir = os.path.join(root, key.split("/")[0])
    cmd = [binary, "--model", fixture_dir, "--device", device, "--dtype", dtype] + args
    start = time.time()
    try:
        p = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return item, None, "timed out after 120 s", time.time() - start
    if p.returncode != 0:
        return item, None, p.stderr.strip()[-500:], time.time() - start
    try:
        return item, json.loads(p.stdout)["tokens"], None, time.time() - start
    except (ValueError, KeyError, TypeError) as e:
        return item, None, f"bad JSON: {e}: {p.stdout[-200:]}", time.time() - start

report = {}
with open(log_path, "w") as log, concurrent.futures.ThreadPoolExecutor(int(jobs)) as pool:
    for (key, dtype, case, args), tokens, error, secs in pool.map(run, runs):
        r = report.setdefault(key, {}).setdefault(dtype, {
            "cases": 0, "exact": 0, "errors": 0, "tokens": 0, "agreeing_tokens": 0,
            "first_errors": []})
        r["cases"] += 1
        want = case.get("generated_ids") or []
        if error is not None:
            r["errors"] += 1
            if len(r["first_errors"]) < 3:
                r["first_errors"].append(f"{case.get('id')}: {error}")
            log.write(f"{key} {dtype} {case.get('id')}: ERROR {error}\n")
            r["tokens"] += len(want)
            continue
        same = sum(1 for a, b in zip(tokens, want) if a == b)
        r["tokens"] += max(len(want), len(tokens))
        r["agreeing_tokens"] += same
        r["exact"] += tokens == want
        log.write(f"{key} {dtype} {case.get('id')}: {same}/{max(len(want), len(tokens))} "
                  f"tokens agree, {secs:.1f} s, args {args}\n")

totals = {}
for per_dtype in report.values():
    for dtype, r in per_dtype.items():
        r["case_agreement"] = round(r["exact"] / r["cases"], 4) if r["cases"] else None
        r["token_agreement"] = round(r["agreeing_tokens"] / r["tokens"], 4) if r["tokens"] else None
        if not r["first_errors"]:
            del r["first_errors"]
        t = totals.setdefault(dtype, {"cases": 0, "exact": 0, "errors": 0, "tokens": 0,
                                      "agreeing_tokens": 0})
        for k in t:
            t[k] += r[k]
for t in totals.values():
    t["case_agreement"] = round(t["exact"] / t["cases"], 4) if t["cases"] else None
    t["token_agreement"] = round(t["agreeing_tokens"] / t["tokens"], 4) if t["tokens"] else None
print(json.dumps({"device": device, "fixtures": report, "total": totals}))
PY

# ---------------------------------------------------------------------------------------------
STAGE=bench
# Short generations (32 prompt tokens): enough to see per-forward time and tokens/s.
if [ "$DRY_RUN" = 1 ]; then
  BENCHES=(
    "qwen3-0.6b --prompt-tokens 8 --gen-length 8 --block-length 8 --steps 8"
    "llada-small --prompt-tokens 8 --gen-length 8 --block-length 8 --steps 4"
  )
else
  BENCHES=(
    "qwen3-0.6b --gen-length 128 --block-length 32 --steps 128"
    "sdar-1.7b --gen-length 128 --block-length 4 --steps 128"
    "llada-8b --gen-length 128 --block-length 32 --steps 64"
  )
fi
for spec in "${BENCHES[@]}"; do
  read -r -a words <<<"$spec"
  shape=${words[0]}
  echo "== dcoder bench --random $spec --device $DEVICE"
  t0=$(date +%s)
  if HF_HOME=$HF_TMP HF_HUB_OFFLINE=1 timeout 240 "$BIN" bench --random "${words[@]}" \
    --device "$DEVICE" --json >"$RESULTS/bench-$shape.out" 2>"$LOGS/bench-$shape.log"; then
    status=ok
  else
    status=failed
  fi
  python3 - "$shape" "$spec" "$status" "$(since "$t0")" "$RESULTS/bench-$shape.out" \
    "$LOGS/bench-$shape.log" >"$RESULTS/bench-$shape.json" <<'PY'
import json, sys
shape, spec, status, secs, out, log = sys.argv[1:7]
entry = {"args": f"--random {spec}", "wall_s": int(secs)}
try:
    with open(out) as f:
        entry["report"] = json.loads(f.read().strip().splitlines()[-1])
except (OSError, ValueError, IndexError):
    with open(log) as f:
        entry["error"] = f.read().strip().splitlines()[-10:]
print(json.dumps(entry))
PY
done
python3 - "$RESULTS" >"$RESULTS/bench.json.tmp" <<'PY'
import glob, json, os, sys
out = {}
for path in sorted(glob.glob(os.path.join(sys.argv[1], "bench-*.json"))):
    with open(path) as f:
        out[os.path.basename(path)[len("bench-"):-len(".json")]] = json.load(f)
print(json.dumps(out))
PY
mv "$RESULTS/bench.json.tmp" "$RESULTS/bench.json"

STAGE=finished
