#!/usr/bin/env bash
# GPU throughput of the customization training entrypoint (`python -m customize.train`), run by
# hand through the device tool, never in CI. The model is SmolLM2-135M's architecture with random
# weights (tokens/s does not depend on the weights; the converted checkpoint is too large to
# carry), trained on the shipped datasets. Prepare the carried folder here first:
#   make customize-local        # converts SmolLM2 once and prepares the datasets under .cache/
#   M=.cache/models/smollm2-135m-instruct.q4_1; mkdir -p .gpucarry/base .gpucarry/ft .gpucarry/cpt
#   cp $M/{config.json,generation_config.json,tokenizer.json,tokenizer_config.json,chat_template.jinja} .gpucarry/base/
#   cp -r .cache/customize/fine-tuning/data/{train,validation} .gpucarry/ft/
#   cp -r .cache/customize/continued-pre-training/data/{train,validation} .gpucarry/cpt/
#   cp bench/customize_gpu.sh .gpucarry/run.sh; echo /.gpucarry/ >> .git/info/exclude
# then run `bash .gpucarry/run.sh` on the device with carry [".gpucarry"].
set -euo pipefail
export PYTHONPATH=.:container PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
python3 - <<'PY'
import shutil, torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
config = AutoConfig.from_pretrained(".gpucarry/base")
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(config)
model.save_pretrained("/tmp/base")
AutoTokenizer.from_pretrained(".gpucarry/base").save_pretrained("/tmp/base")
shutil.copy(".gpucarry/base/chat_template.jinja", "/tmp/base/")
print("base model params", sum(p.numel() for p in model.parameters()))
PY
for bs in 32; do
  echo "== fine-tuning (LoRA) batch $bs"
  python3 -m customize.train --train-dir .gpucarry/ft/train --validation-dir .gpucarry/ft/validation \
    --base-model-dir /tmp/base --model-dir /tmp/ft-$bs --output-data-dir "$OUT/ft-$bs" \
    --mode fine-tuning --device cuda --bf16 --max_steps 30 --batch_size $bs 2>&1 | grep -v "^train_loss\|^validation_loss" | tail -4
  echo "== continued pre-training (full) batch $bs"
  python3 -m customize.train --train-dir .gpucarry/cpt/train --validation-dir .gpucarry/cpt/validation \
    --base-model-dir /tmp/base --model-dir /tmp/cpt-$bs --output-data-dir "$OUT/cpt-$bs" \
    --mode continued-pre-training --device cuda --bf16 --max_steps 30 --batch_size $bs 2>&1 | grep -v "^train_loss\|^validation_loss" | tail -4
done
