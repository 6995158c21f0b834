.PHONY: setup demo serve test bench

setup:
	./scripts/setup.sh

demo: setup
	.venv/bin/puente demo

serve: setup
	.venv/bin/puente serve

test: setup
	./scripts/test.sh

bench: setup
	.venv/bin/python benchmarks/latency.py
