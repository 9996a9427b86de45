#!/bin/bash
# Equal-budget GeoMFormer vs MACE on a lent GPU machine (no internet there). Beforehand, here:
# put the wheels of mace-torch and the missing packages in .whl/ (see research/mace_compare/README.md).
# There:  MINUTES=3.5 bash research/mace_compare/gpu_equal_budget.sh   (results: $OUT/log.txt, summary.json, runs.tgz)
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    > "$OUT/setup.txt" 2>&1 || { cat "$OUT/setup.txt"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/gpu.txt" 2>&1
python3 research/mace_compare/equal_budget.py "${CONFIG:-research/configs/catalysis-v4.yaml}" --out /tmp/cmp --minutes "${MINUTES:-3.5}" \
    --device cuda --batch-size "${BATCH:-12}" ${EXTRA:-} 2>&1 | tee -a "$OUT/log.txt"   # -a: several runs in one device call
# The device returns at most 8 files from $OUT: every run's files go flat into one archive,
# runs.tgz (rebuilt by each invocation from all runs so far, so the last one holds them all).
STAGE=/tmp/stage; rm -rf "$STAGE"; mkdir -p "$STAGE"
cp /tmp/cmp/summary.json "$OUT/"
# Every GeoMFormer run, whatever its --name (a run folder is one with a test_metrics.json).
for run in /tmp/cmp/*/; do
    run=${run%/}
    [ -f "$run/test_metrics.json" ] && for f in model.pt metrics.csv test_metrics.json; do cp "$run/$f" "$STAGE/$(basename "$run")-$f"; done
done
for run in /tmp/cmp/mace*/; do  # mace, mace-seed1, ... (not mace-data)
    run=${run%/}; name=$(basename "$run")
    [ -f "$run/budget.json" ] && for f in "$run/mace-cpu.model" "$run/budget.json" "$run"/logs/*.log; do
        cp "$f" "$STAGE/$name-$(basename "$f")"; done  # the log is mace_run-<seed>.log
done
tar czf "$OUT/runs.tgz" -C "$STAGE" .
ls -l "$STAGE" "$OUT"
