#!/usr/bin/env bash
# The whole GPU lease in one command, prepared so that a session which is lent a GPU spends
# its device minutes measuring, not debugging. On this machine first:
#     bash tests/benchmarks/gpu_wheels.sh          # COCO tools for the GPU's Python 3.12
# then one device call (the device tool's `run`), carry [".whl"], timeout_s 600:
#     bash tests/benchmarks/gpu_lease.sh
# and back here:
#     python tests/benchmarks/gpu_fold_back.py /work/.device/<files_at>
#
# Part 1 (LATENCY_S, default 300 s): fp32 and fp16 GPU latency of every paper-scale table
#   row (`rtinst sweep all --costs-only --latency`): each model is timed as each cost file
#   is written, so a timeout keeps what was measured and the next call goes on from there.
# Part 2 (SWEEP_S, default 180 s): the tiny sweep on the GPU, time-boxed, into its own runs
#   folder (never mixed with the CPU records): its records show what a tiny run costs on
#   this GPU and whether its AP matches the CPU run of the same config hash.
# SPECS (default all) limits both parts, e.g. SPECS="yolact/table2a".
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/rtinst_gpu_out}
LATENCY_S=${LATENCY_S:-300}
SWEEP_S=${SWEEP_S:-180}
SPECS=${SPECS:-all}
SWEEP_WORKERS=${SWEEP_WORKERS:-8}
PY=${PY:-python3}
mkdir -p "$OUT"
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/lease.log"; }

if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/rtinst_site .whl/*.whl || { log "wheel install failed"; exit 3; }
    export PYTHONPATH=/tmp/rtinst_site:$PWD${PYTHONPATH:+:$PYTHONPATH}
else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >"$OUT/gpu.txt" 2>&1 || true
$PY -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '-')" \
    2>&1 | tee -a "$OUT/lease.log"
$PY -m rtinst sweep --help >/dev/null || { log "rtinst does not import here"; exit 4; }

# The tiny preset's synthetic data (data/synthetic, as `make data`) is generated beside
# part 1 on one of the 16 CPU cores
(nice -n 19 $PY -m rtinst data synthetic --out data/synthetic >"$OUT/data.log" 2>&1) &
DATA_PID=$!

log "part 1: latency of every table row (<= ${LATENCY_S} s)"
# shellcheck disable=SC2086
timeout "$LATENCY_S" $PY -m rtinst sweep $SPECS --costs-only --latency --workers 1 \
    >"$OUT/latency.log" 2>&1
log "part 1 exit $? ($(grep -l '"GPU latency"' results/costs/*.json 2>/dev/null | wc -l) cost files with GPU latency)"
tar czf "$OUT/costs.tgz" results/costs

wait "$DATA_PID" || log "data generation failed (see data.log)"
log "part 2: tiny sweep on the GPU (<= ${SWEEP_S} s, ${SWEEP_WORKERS} workers)"
# shellcheck disable=SC2086
timeout "$SWEEP_S" $PY -m rtinst sweep $SPECS --preset tiny --runs-dir /tmp/rtinst_gpu_runs \
    --results-dir /tmp/rtinst_gpu_results --cost-preset none --no-notebook \
    --workers "$SWEEP_WORKERS" >"$OUT/sweep.log" 2>&1
log "part 2 exit $? ($(ls /tmp/rtinst_gpu_runs/*/record.json 2>/dev/null | wc -l) run folders)"
# records, logs and curves only: no checkpoints, no COCO result files
tar czf "$OUT/gpu_runs.tgz" -C /tmp --exclude='checkpoints' --exclude='*.pt' \
    --exclude='coco_segm_results.json' --exclude='.lock' rtinst_gpu_runs 2>/dev/null || true
log "done"
