# GPU serving benchmark targets (owner: bench/gpu_serving.py). The full run needs the GPU machine
# (device tool, see docs/benchmarks.md); here only its CPU smoke run and test.
.PHONY: bench-gpu-smoke test-gpu-bench

bench-gpu-smoke: setup ## GPU serving benchmark's whole path on the CPU with a tiny model (JSON last)
	$(PY) -m bench.gpu_serving --smoke

test-gpu-bench: setup ## Only the GPU serving benchmark's CPU smoke test
	$(VENV)/bin/pytest tests/bench/test_gpu_serving_smoke.py --durations=10
