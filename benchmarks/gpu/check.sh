#!/usr/bin/env bash
# The GPU numbers of benchmarks/RESULTS-real-size.md in one run (< 10 minutes on one H200), and the FSDP2 launch check:
#   1. SFT of a locally built, randomly initialised ~0.48B Llama-shaped model in bf16: tokens/s and MFU
#      (6·N·tokens/s over the GPU's dense bf16 peak), packing vs padding, through train_sft (TRL);
#   2. DPO seconds per step on the same model, through train_dpo;
#   3. generation tokens/s: a plain `generate` loop vs the hf: backend (vs vllm: when the image has it),
#      batch 1/16/64, n 1 and 4, bf16;
#   4. the search benchmark (search vs saturated backend vs sequential reference) on that model.
# No hub there either: every model is built locally. Usage, from the repo root on the GPU machine:
#   bash benchmarks/gpu/prepare.sh           # here first, with the package index: wheels into .whl/
#   bash benchmarks/gpu/check.sh [OUT_DIR]   # there (the device tool: carry .whl, OUT_DIR=$OUT)
# SAGE_GPU_CHECK_DRY=1 runs every step at toy size on the CPU, to check the script itself.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-${OUT:-gpu-out}}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
if [ "${SAGE_GPU_CHECK_DRY:-0}" = 1 ]; then
  SCALE=5  # a CPU is slow, and may be shared
  DEV=cpu SIZE=tiny STEPS=3 BS=2 LEN=256 GEN=(--batches 2 --n 1 --dtypes float32 --max-tokens 8 --repeats 1)
  SEARCH=(--seeds 4 --turns 1 --candidates 2 --repeats 1 --sequential-seeds 2)
else
  SCALE=1
  DEV=cuda SIZE=500m STEPS=30 BS=8 LEN=2048 GEN=(--batches 1 16 64 --n 1 4 --dtypes bfloat16 --max-tokens 64 --repeats 3)
  SEARCH=(--seeds 64 --turns 4 --candidates 4 --repeats 1 --sequential-seeds 4 --batch-size 256)
fi
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__)"
  "$PY" -c "import vllm; print('vllm', vllm.__version__)" 2>/dev/null || echo "vllm: not installed (generation and search measured on hf only)"
} | tee "$OUT/machine.txt"
step() {  # name, time limit in s, command...
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s)"
  timeout $((limit * SCALE)) "$@" > "$OUT/$name.log" 2>&1
  echo "   exit $? ; last lines:"; tail -n 12 "$OUT/$name.log"
}
MODEL="$OUT/model-$SIZE"
"$PY" - "$MODEL" "$SIZE" <<'PYEOF'
import sys
from bench_sft import SIZES
from sage_dialog.sandbox.tiny_model import build_tiny_model, default_corpus
build_tiny_model(sys.argv[1], default_corpus(), max_positions=4096, **SIZES[sys.argv[2]])
PYEOF
step sft 210 "$PY" benchmarks/bench_sft.py --models "$SIZE" --device "$DEV" --steps "$STEPS" --batch-size "$BS" \
  --max-length "$LEN" --examples 2000 --repeats 1 --json "$OUT/sft.json"
step dpo 80 "$PY" benchmarks/bench_dpo.py --model "$SIZE" --device "$DEV" --steps "$STEPS" --batch-size "$BS" \
  --max-length $((LEN / 2)) --json "$OUT/dpo.json"
GEN_PATHS=(generate-loop "hf[auto]")
"$PY" -c "import vllm" 2>/dev/null && GEN_PATHS+=(vllm)
step generation 130 "$PY" benchmarks/bench_real_size.py --model "$MODEL" --paths "${GEN_PATHS[@]}" "${GEN[@]}" \
  --threads 0 --json "$OUT/generation.json"
step search 80 "$PY" benchmarks/bench_search.py --model "$MODEL" --backend hf "${SEARCH[@]}" --json "$OUT/search.json"
# 5. FSDP2 under accelerate launch with the shipped fsdp.yaml (it cannot run on CPU: accelerate makes CPU
#    process groups DDP; tests/scale/test_launch_train.py has the same launch as a test, skipped without CUDA)
if [ "$DEV" = cuda ]; then
  NGPU=$("$PY" -c "import torch; print(min(2, torch.cuda.device_count()))")
  "$PY" - "$OUT/fsdp-data.jsonl" <<'PYEOF'
import json, sys
rows = [{"messages": [{"role": "user", "content": f"I feel case {i}."},
                      {"role": "assistant", "content": "{a_motivation: comfort} That sounds hard."}]} for i in range(32)]
open(sys.argv[1], "w").write("".join(json.dumps(r) + "\n" for r in rows))
PYEOF
  step fsdp 240 "$PY" -m accelerate.commands.launch --config_file src/sage_dialog/train/accelerate/fsdp.yaml \
    --num_processes "$NGPU" -m sage_dialog train sft --model "$MODEL" --data "$OUT/fsdp-data.jsonl" -o "$OUT/fsdp" \
    --max-steps 6 --method full train.batch_size=2 train.gradient_checkpointing=false data.max_length=256
  ls "$OUT/fsdp/checkpoint-6" 2>/dev/null | grep -q fsdp && echo "   FSDP sharded checkpoint: yes" \
    || echo "   FSDP sharded checkpoint: NO"
  rm -rf "$OUT/fsdp"
fi
rm -rf "$MODEL"
echo "done: $OUT"
