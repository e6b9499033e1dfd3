# skymesh — the two commands of the README, and a few more.
.PHONY: up test deps lint bench clean

PY := .venv/bin/python

deps:
	@scripts/bootstrap.sh

up: deps ## start the local stack (DynamoDB Local, Mosquitto, API, scheduler, rule bridge)
	.venv/bin/skymesh local up

test: deps ## every test: unit, functional, integration, AWS adapters (moto)
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: deps
	$(PY) -m ruff check .
	$(PY) -m mypy chalicelib app.py

bench: deps ## benchmarks; results and commands in BENCHMARKS.md
	$(PY) bench/run_all.py

demo: deps ## a lab of network namespaces: control plane + 4 agents, status table, ping matrix (root)
	$(PY) -m skymesh.lab.demo

.PHONY: demo

clean:
	rm -rf .venv .pytest_cache .ruff_cache .mypy_cache
