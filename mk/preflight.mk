# Checks that catch deploy failures before `cdk deploy` (owner: preflight/, docs/infra.md).
.PHONY: preflight preflight-policy check-images check-engine-args diff test-preflight

# Instance metadata is off unless the caller turns it on (AWS_EC2_METADATA_DISABLED=false on an
# EC2 instance with a role): without credentials, botocore would otherwise probe it.
PREFLIGHT_AWS_ENV := AWS_EC2_METADATA_DISABLED=$${AWS_EC2_METADATA_DISABLED:-true}

preflight: synth ## Read-only checks of the target account for ENV (ok/FAIL + fix per line)
	$(PREFLIGHT_AWS_ENV) $(PY) -m preflight account --env $(ENV) --assembly cdk.out

preflight-policy: setup ## Print the read-only IAM policy `make preflight` needs
	@$(PY) -m preflight policy

test-preflight: setup ## Only the preflight tests
	$(VENV)/bin/pytest tests/preflight --durations=10

check-images: setup ## Resolve each image's requirements on its base/platform with pip (dry run, needs PyPI)
	$(PY) -m preflight images

check-engine-args: setup ## Parse every environment's vLLM argv with the pinned vLLM (side venv in .cache/)
	$(PY) -m preflight engine-args

BASE ?= HEAD
FAIL ?=
diff: setup ## CDK's diff per stack of the working tree vs BASE (git rev) for ENV, offline; FAIL=1 exits 1 on changes
	$(PY) -m preflight diff --env $(ENV) --base $(BASE) $(if $(FAIL),--fail,)
