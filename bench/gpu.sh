#!/usr/bin/env bash
# One script for a lent GPU, about 9 minutes on an H200 (bench/README.md has the exact device
# `run` call). Everything it measures lands in $OUT (default outputs/bench-gpu), at most 8 files:
#   gpu.log      everything printed, with the summary at the end
#   small.json   ELECTRA-Small, seq 128, batch 128: ours eager and compiled, the HF baseline
#   base128.json ELECTRA-Base, seq 128, batch 128 (ours, eager)
#   base512.json ELECTRA-Base, seq 512, batch 64 (ours, eager; profiles/base.yaml's micro-batch)
#   history.csv, metrics.json, result.json   a ~5-minute Small pretraining on the bundled corpus
# Each bench row: tokens/s, MFU against the measured 8192^3 bf16 matmul and the chip's
# datasheet peak, peak GPU memory.
#
# The device machine's image has torch, transformers, tokenizers, numpy, pyyaml and typer but
# not pydantic or zstandard (the project needs them) nor mlflow: wheels carried in .whl/
# are installed first (bench/README.md: how to fetch them). Without mlflow the pretraining
# runs the CLI stage's own functions (ingest, tokenize, pretrain from electra's library,
# params resolved as `electra pretrain --profile small -S ...` resolves them) without the
# MLflow run around them; with mlflow it runs `electra run` itself.
#
# On a CPU-only machine it runs tiny shapes and a few micro steps, so it can be smoke-tested.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/outputs/bench-gpu}
mkdir -p "$OUT"
LOG="$OUT/gpu.log"
: >"$LOG"
PY=${PYTHON:-python3}
command -v "$PY" >/dev/null || PY=python
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
SCRIPT_START=$(date +%s)
say() { echo "$@" | tee -a "$LOG"; }
FAILED=""

# --- 1. dependencies: carried wheels, then the project itself on PYTHONPATH -------------------
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
missing=$("$PY" - <<'EOF'
import importlib.util
need = ["torch", "transformers", "tokenizers", "numpy", "yaml", "pydantic", "zstandard", "charset_normalizer", "tqdm"]
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))
EOF
)
if [ -n "$missing" ]; then
  say "missing Python packages: $missing (carry their wheels in .whl/, see bench/README.md)"
  exit 2
fi
VIA=${BENCH_PRETRAIN_VIA:-auto}   # cli | library | auto (cli when mlflow imports)
if [ "$VIA" = auto ]; then
  if "$PY" -c 'import mlflow, prefect' 2>/dev/null; then VIA=cli; else VIA=library; fi
fi

if "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  GPU=1
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 | tee -a "$LOG"
else
  GPU=0
  say "no CUDA device: tiny shapes and a few micro steps on the CPU"
fi
"$PY" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' | tee -a "$LOG"

# --- 2. step benchmarks (bench/pretrain.py; its last line is a JSON summary) ------------------
bench() {  # bench NAME ARGS...: run, keep the log, save the JSON line as $OUT/NAME.json
  local name=$1; shift
  say "== bench $name: bench/pretrain.py $*"
  "$PY" bench/pretrain.py "$@" 2>&1 | tee -a "$LOG" | tee "$OUT/.$name.txt" || FAILED+=" bench-$name"
  tail -n 1 "$OUT/.$name.txt" >"$OUT/$name.json"; rm -f "$OUT/.$name.txt"
}
if [ $GPU = 1 ]; then
  bench small --shapes small --seq-len 128 --batch-size 128 --steps 20 --warmup 5 --precision bf16 --compile
  bench base128 --shapes base --seq-len 128 --batch-size 128 --steps 10 --warmup 3 --precision bf16 --no-baseline
  bench base512 --shapes base --seq-len 512 --batch-size 64 --steps 10 --warmup 3 --precision bf16 --no-baseline
else
  bench small --shapes tiny --seq-len 64 --batch-size 4 --steps 2 --warmup 1
fi

# --- 3. a ~5-minute Small pretraining on the bundled corpus (data/pretrain, data/vocab) -------
# Steps sized from the Small bench's eager tokens/s (the trainer adds logging and validation,
# so it runs a little under 5 minutes of steps); warm-up a tenth of the run so that the
# curve shows learning; the corpus guard overridden (the bundled corpus is 8 MB).
if [ $GPU = 1 ]; then
  # The whole script stays within TOTAL_SECONDS (a device command may run 600 s): a slow
  # compile above shortens the run rather than overrunning the call.
  SECONDS_TARGET=${PRETRAIN_SECONDS:-300}
  LEFT=$(( ${TOTAL_SECONDS:-540} - ($(date +%s) - SCRIPT_START) - 60 ))
  (( LEFT < SECONDS_TARGET )) && SECONDS_TARGET=$(( LEFT > 60 ? LEFT : 60 ))
  PROFILE=small
  TPS=$("$PY" -c 'import json,sys; a=json.load(open(sys.argv[1]))["all"]; print(max(r["tokens_per_s"] for r in a if r["variant"]=="ours" and not r["compiled"]))' "$OUT/small.json" 2>/dev/null || echo 100000)
  STEPS=$("$PY" -c "print(max(100, int($SECONDS_TARGET * $TPS / (128 * 128) * 0.75)))")
  LOG_EVERY=$(( STEPS / 30 > 10 ? STEPS / 30 : 10 ))
else
  PROFILE=micro STEPS=4 LOG_EVERY=2 SECONDS_TARGET=300
fi
WARMUP=$(( STEPS / 10 > 1 ? STEPS / 10 : 1 ))
RUN_ROOT=${BENCH_RUN_ROOT:-$ROOT/outputs/bench-gpu-run}
SETS=(-S output_root="$RUN_ROOT" -S pretrain.allow_small_corpus=true -S pretrain.max_steps=$STEPS
      -S pretrain.warmup_steps=$WARMUP -S pretrain.log_every=$LOG_EVERY -S pretrain.checkpoint_every=1000000)
say "== pretraining: profile $PROFILE, $STEPS steps (sized to ${SECONDS_TARGET} s), via $VIA, outputs in $RUN_ROOT"
# A backstop: SIGTERM 30 s past TOTAL_SECONDS (the trainer checkpoints and stops; its log lines
# stay, history.csv is not written), so that the call still returns what $OUT holds.
HARD=$(( ${TOTAL_SECONDS:-540} + 30 - ($(date +%s) - SCRIPT_START) ))
STOP="timeout -s TERM $(( HARD > 120 ? HARD : 120 ))"
rm -rf "$RUN_ROOT"
start=$(date +%s)
if [ "$VIA" = cli ]; then
  export MLFLOW_TRACKING_URI=sqlite:///$RUN_ROOT.mlflow.db
  $STOP "$PY" -m electra.cli run --profile $PROFILE --stages ingest,tokenize,pretrain --no-progress "${SETS[@]}" 2>&1 | tee -a "$LOG" || FAILED+=" pretrain"
else
  $STOP "$PY" - $PROFILE "${SETS[@]}" <<'EOF' 2>&1 | tee -a "$LOG"
# The stages `electra run --stages ingest,tokenize,pretrain` runs, without its MLflow run.
import json, logging, sys, time
from electra.core.config import load_params
from electra.data.ingest import ingest
from electra.data.tokenize import tokenize
from electra.pretraining.trainer import pretrain

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
profile, sets = sys.argv[1], [a for a in sys.argv[2:] if a != "-S"]
params = load_params("params.yaml", profile, sets)
for name, stage in (("ingest", lambda: ingest(params.ingest, progress=False)),
                    ("tokenize", lambda: tokenize(params.tokenize, progress=False)),
                    ("pretrain", lambda: pretrain(params.pretrain, progress=False))):
    t0 = time.time()
    result = stage()
    print(f"stage {name}: {time.time() - t0:.1f} s", flush=True)
print(json.dumps({k: result.get(k) for k in ("steps", "train_seconds", "precision", "device", "final")}))
EOF
  [ "${PIPESTATUS[0]}" = 0 ] || FAILED+=" pretrain"
fi
say "pretraining wall time: $(( $(date +%s) - start )) s"
for f in history.csv metrics.json result.json; do
  [ -f "$RUN_ROOT/pretrain/$f" ] && cp "$RUN_ROOT/pretrain/$f" "$OUT/$f"
done

# --- 4. summary ----------------------------------------------------------------------------
"$PY" - "$OUT" <<'EOF' 2>&1 | tee -a "$LOG"
import csv, json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("== summary")
for name in ("small", "base128", "base512"):
    path = out / f"{name}.json"
    if not path.exists():
        continue
    s = json.loads(path.read_text())
    print(f"{name}: device {s['device']}, matmul bf16 {s['matmul_flops'] / 1e12:.3g} TFLOP/s measured"
          + (f", {s['chip_peak_flops'] / 1e12:.0f} datasheet" if s.get("chip_peak_flops") else ""))
    for r in s["all"]:
        mem = r["peak_gpu_mb"] if r["peak_gpu_mb"] is not None else r["peak_rss_mb"]
        chip = f", MFU chip {100 * r['mfu_chip']:.1f}%" if r.get("mfu_chip") else ""
        print(f"  {r['shape']} seq {s['seq_len']} batch {r['batch_size']} {r['variant']}"
              f"{' compiled' if r['compiled'] else ''} {r['precision']}: {r['tokens_per_s']:,.0f} tokens/s, "
              f"MFU {100 * r['mfu']:.1f}% of measured{chip}, peak memory {mem:,.0f} MB")
hist = out / "history.csv"
if hist.exists():
    rows = list(csv.DictReader(hist.open()))
    print(f"pretraining loss curve ({len(rows)} log rows): step, loss, tokens/s")
    for r in rows:
        print(f"  {r.get('step')}, {float(r.get('loss', 'nan')):.4f}, {float(r.get('tokens_per_s', 'nan')):,.0f}")
else:
    print("pretraining: no history.csv (see gpu.log)")
EOF
[ "${PIPESTATUS[0]}" = 0 ] || FAILED+=" summary"
if [ -n "$FAILED" ]; then say "FAILED:$FAILED"; exit 1; fi
say "all parts ran; files in $OUT"
