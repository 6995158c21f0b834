.PHONY: setup demo demo-queue serve test bench

setup:
	./scripts/setup.sh

demo: setup
	.venv/bin/puente demo

demo-queue: setup
	.venv/bin/puente demo --scenario queue --exit

serve: setup
	.venv/bin/puente serve

test: setup
	./scripts/test.sh

bench: setup
	.venv/bin/python benchmarks/latency.py
