#!/usr/bin/env bash
# LoRA training of the GPT-NeoX-20B shape (random bf16 weights) through `python -m customize.train`
# on every GPU of the machine, then the evaluation job's generation; run by hand through the
# device tool, never in CI. Prepare the carried folder here first:
#   .venv/bin/python -m bench.customize_random prepare .gpucarry; echo /.gpucarry/ >> .git/info/exclude
# then on the device, with carry [".gpucarry"]: bash bench/customize_gpu.sh [STEPS]
# Settings as the reference run (plain transformers + peft): r=16 on query_key_value and dense,
# gradient checkpointing, bf16, batch 8 x 512 per GPU. With several GPUs the entrypoint itself
# starts one worker per GPU under torchrun and shards with FSDP; the second training command
# resumes from the first one's checkpoint (a spot restart).
set -euo pipefail
export PYTHONPATH=.:contracts:container PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false CUSTOMIZE_CHECKPOINT_DIR=/tmp/checkpoints
# Leave NVLink multicast off (the device's rule).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
STEPS=${1:-20}
D=.gpucarry
OUT=${OUT:-/tmp/out}
GPUS=$(nvidia-smi --query-gpu=name --format=csv,noheader | wc -l)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
HP="--mode continued-pre-training --method lora --bf16 --gradient_checkpointing --lora_rank 16
  --lora_alpha 32 --lora_dropout 0 --lora_target_modules query_key_value,dense --batch_size 8
  --max_seq_len 512 --eval_steps 1000 --log_steps 1 --save_format adapter --device cuda"
train() {
  python3 -m bench.customize_random train --train-dir $D/cpt/train --validation-dir $D/cpt/validation \
    --base-model-dir $D/base --model-dir /tmp/adapter --output-data-dir "$OUT/$1" $HP "${@:2}"
}
summary() {
  python3 - "$OUT/$1/metrics.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
steps = [h["step_seconds"] for h in m["history"]][2:]  # steady state: without the first two
steps.sort()
tokens_per_step = m["hyperparameters"]["batch_size"] * m["hyperparameters"]["max_seq_len"] * m["world_size"]
median = steps[len(steps) // 2]
print(json.dumps({"gpus": m["world_size"], "steps": m["steps"], "median_step_seconds": round(median, 3),
                  "steady_tokens_per_second": round(tokens_per_step / median, 1),
                  "cumulative_tokens_per_second": round(m["tokens_per_second"], 1),
                  "peak_gpu_memory_gib_rank0": round(m["peak_gpu_memory_gib"], 2)}))
PY
}
echo "== LoRA training, $GPUS GPU(s), $STEPS steps"
train "train-${GPUS}gpu" --max_steps "$STEPS" --checkpoint_steps 10
summary "train-${GPUS}gpu"
if [ "$GPUS" -gt 1 ]; then
  echo "== resumed from the checkpoint (spot restart), to step $((STEPS + 4))"
  train "resume-${GPUS}gpu" --max_steps $((STEPS + 4)) --checkpoint_steps 10 | grep -E "resumed_from_step|^step=$((STEPS + 1));|tokens_per_second=.*train_tokens" || true
fi
if [ "$GPUS" -eq 1 ]; then
  echo "== reference: bare transformers + peft loop, same settings, same machine"
  python3 -m bench.customize_random reference $D "$STEPS"
fi
echo "== evaluation generation (transformers stands in for vLLM here), base vs customized adapter"
python3 -m bench.customize_random evaluate --mode continued-pre-training --data $D/cpt/heldout.jsonl \
  --base-model $D/base --customized-model /tmp/adapter --out-dir "$OUT/eval-${GPUS}gpu" \
  --device cuda --engine transformers --max-seq-len 512 --max-new-tokens 64 --batch-size 8 --samples 8
