# Front-door targets (owner: front door). The app is lambda/front_door; it needs the chat and
# moderation endpoints (the SageMaker runtime emulator) and a DynamoDB-compatible server, which
# `make local` starts; these targets point the app at them through CHATBOT_* variables.
.PHONY: serve-front-door bench-front-door test-front-door

FRONT_DOOR_PORT ?= 8000
FRONT_DOOR_ENV ?= dev
EMULATOR_URL ?= http://127.0.0.1:8001
DYNAMODB_URL ?= http://127.0.0.1:8002
# Local runs: endpoints and table named as the CDK app names them; the local app factory adds
# the fixed caller API Gateway would authenticate, and the chat page.
FRONT_DOOR_LOCAL_ENV := CHATBOT_CHAT_ENDPOINT=chatbot-$(FRONT_DOOR_ENV)-chat \
  CHATBOT_MODERATION_ENDPOINT=chatbot-$(FRONT_DOOR_ENV)-moderation \
  CHATBOT_SESSION_TABLE=$${CHATBOT_SESSION_TABLE:-chatbot-$(FRONT_DOOR_ENV)-sessions} \
  CHATBOT_SAGEMAKER_ENDPOINT_URL=$(EMULATOR_URL) CHATBOT_DYNAMODB_ENDPOINT_URL=$(DYNAMODB_URL) \
  CHATBOT_REGION=us-east-1 AWS_ACCESS_KEY_ID=$${AWS_ACCESS_KEY_ID:-local} \
  AWS_SECRET_ACCESS_KEY=$${AWS_SECRET_ACCESS_KEY:-local} \
  POWERTOOLS_SERVICE_NAME=chatbot-front-door POWERTOOLS_METRICS_NAMESPACE=Chatbot

serve-front-door: setup ## Front door on 127.0.0.1:$(FRONT_DOOR_PORT) (uvicorn, with the local fixed caller)
	$(FRONT_DOOR_LOCAL_ENV) $(PY) -m uvicorn local.stack.front_door_app:create_app --factory \
	  --host 127.0.0.1 --port $(FRONT_DOOR_PORT) --no-access-log

bench-front-door: setup ## Front door vs the emulator directly: TTFT, chunk gaps, cold init (JSON last)
	$(PY) bench/front_door.py

test-front-door: setup ## Only the front-door tests
	$(VENV)/bin/pytest tests/front_door --durations=10
