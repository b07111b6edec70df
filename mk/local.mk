# Local stack (`make local`) and the browser its end-to-end tests drive.
.PHONY: local browser end-to-end

# apt-get needs root; a developer who is not root gets sudo's prompt.
APT := $(if $(filter 0,$(shell id -u)),,sudo )

local: setup ## Run the whole chatbot on this machine (ports: LOCAL_FRONT_DOOR_PORT=8000 ...; flags: LOCAL_ARGS=...)
	$(PY) -m local.stack $(LOCAL_ARGS)

browser: setup ## Install Debian's chromium and Playwright for Python for the e2e tests, when missing
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "Installing Debian's chromium for the e2e tests"; \
	  $(APT)apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(APT)apt-get install -y -qq chromium >/dev/null; }
	@$(PY) -c "import playwright" 2>/dev/null || \
	  $(PY) -m pip install --quiet -r requirements/e2e.txt -c requirements/lock.txt

end-to-end: browser ## Run only the end-to-end tests (tests/e2e) against a freshly started local stack
	$(VENV)/bin/pytest tests/e2e --durations=10

# The whole test suite includes tests/e2e, which drives chromium and imports playwright (mypy
# reads those imports too).
typecheck unit: browser
