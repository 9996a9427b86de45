#!/bin/bash
# Equal-budget GeoMFormer vs MACE on a lent GPU machine (no internet there). Beforehand, here:
# put the wheels of mace-torch and the missing packages in .whl/ (see scripts/mace_compare/README.md).
# There:  MINUTES=3.5 bash scripts/mace_compare/gpu_equal_budget.sh   (results under $OUT/cmp)
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    > "$OUT/setup.txt" 2>&1 || { cat "$OUT/setup.txt"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/gpu.txt" 2>&1
python3 scripts/mace_compare/equal_budget.py "${CONFIG:-scripts/catalysis-v4.yaml}" --out /tmp/cmp --minutes "${MINUTES:-3.5}" \
    --device cuda --batch-size "${BATCH:-12}" 2>&1 | tee "$OUT/log.txt"
mkdir -p "$OUT/cmp/geomformer" "$OUT/cmp/mace"
cp /tmp/cmp/summary.json "$OUT/cmp/"
cp /tmp/cmp/geomformer/{model.pt,metrics.csv,test_metrics.json,parity.png} "$OUT/cmp/geomformer/" 2>/dev/null
cp /tmp/cmp/mace/{mace.model,budget.json} "$OUT/cmp/mace/" 2>/dev/null
cp -r /tmp/cmp/mace/{logs,results,checkpoints} "$OUT/cmp/mace/" 2>/dev/null
ls -lR "$OUT/cmp"
