#!/usr/bin/env bash
# One call on a lent GPU, within 8 minutes: where the time of a VGG-4 hEP step goes at
# the papers' settings and at the fast ones (benchmarks/conv_step.py, batch 128), then
# mnist-conv-hep trained for as many epochs as fit in TRAIN_SECONDS (default 300), its
# metrics.jsonl kept. Everything goes to $OUT (default benchmarks/gpu_check_out). Runs
# from the source tree (PYTHONPATH) with this checkout's .venv if there is one, else the
# machine's python3 (the device machine's has JAX, Equinox, optax, optimistix, lineax).
# The MNIST IDX files come from $DATA: the device machine cannot see ../shared, so copy
# them into an ignored folder of the checkout and carry it (DATA=.data/mnist).
#
#   DATA=.data/mnist bash benchmarks/gpu_check.sh      # on the GPU machine
#   SMALL=1 bash benchmarks/gpu_check.sh               # the same steps at toy sizes, any CPU
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/gpu_check_out}
DATA=${DATA:-../shared/data/mnist}
TRAIN_SECONDS=${TRAIN_SECONDS:-300}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
TRAIN_CMD=("$PY" -c "import sys; from eqx_eqprop.internal import cli_main; sys.exit(cli_main(sys.argv[1:]))")
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true; } > "$OUT/device.txt" 2>&1
$PY -c "import jax; print(jax.devices())" >> "$OUT/device.txt"
if [ -n "${SMALL:-}" ]; then
    BENCH=(--batch 2 --steps 1 --repeats 1 --channels 8 16 16 16)
    TRAIN=(--dataset digits --epochs 2 --set "model.channels=[4,8]")
    TRAIN_SECONDS=${TRAIN_SECONDS_SMALL:-240}
else
    BENCH=(--batch 128)
    TRAIN=(--data-dir "$DATA")
fi
start=$(date +%s)
$PY benchmarks/conv_step.py "${BENCH[@]}" > "$OUT/conv_step.json"
echo "conv_step: $(( $(date +%s) - start )) s" | tee -a "$OUT/times.txt"
start=$(date +%s)
status=0
timeout --signal=INT "$TRAIN_SECONDS" "${TRAIN_CMD[@]}" --preset mnist-conv-hep \
    "${TRAIN[@]}" --no-progress --fresh --out "$OUT/mnist-conv-hep" > "$OUT/train.log" 2>&1 || status=$?
echo "mnist-conv-hep: $(( $(date +%s) - start )) s, exit $status (124 or 130: stopped at the time limit)" | tee -a "$OUT/times.txt"
cat "$OUT/conv_step.json"
cat "$OUT/mnist-conv-hep/metrics.jsonl" 2>/dev/null || echo "no epoch finished"
