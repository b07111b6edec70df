# Promotion of a customized chat model (owner: infrastructure). The customization pipeline ends
# at a registered model package; promotion is a reviewed change to cdk.json that the ordinary
# `cdk deploy` rolls out (docs/customize.md, "Promote a customized model").
.PHONY: promote

promote: setup ## Point ENV's chat model at an approved package: make promote ENV=<env> PACKAGE=<arn> [APPROVE=1]
	@test -n "$(PACKAGE)" || { echo "make promote: PACKAGE=<model package ARN> is required" >&2; exit 2; }
	$(PY) -m scripts.promote --env "$(ENV)" --package "$(PACKAGE)" $(if $(filter 1,$(APPROVE)),--approve)
