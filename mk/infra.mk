# CDK app targets (owner: infrastructure). `make synth` itself lives in the Makefile.
.PHONY: synth-all bench-synth cfn-lint stage-model

synth-all: setup ## Synthesize dev, staging and prod one after the other into cdk.out/env-<env>/
	for env in dev staging prod; do \
	  npx cdk synth -c env=$$env --quiet --output cdk.out/env-$$env; \
	done

cfn-lint: synth ## cfn-lint every template of the synthesized environment (ENV=...)
	$(VENV)/bin/cfn-lint --regions us-east-1 -- cdk.out/assembly-chatbot-$(ENV)/*.template.json

bench-synth: setup ## Time synth of every environment against a one-bucket app (JSON last line)
	$(PY) bench/synth.py

stage-model: setup ## Stage weights: make stage-model SRC=<dir|hf id> BUCKET=<bucket> NAME=<weights_name>
	$(PY) scripts/stage_model.py "$(SRC)" --bucket "$(BUCKET)" --name "$(NAME)"
