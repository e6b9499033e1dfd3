# skymesh — the two commands of the README, and a few more.
.PHONY: up test deps lint bench clean synth fuzz mutate web

PY := .venv/bin/python
# What mypy checks (settings in pyproject.toml): the control plane, the agent and the CLI/lab/local mode.
TYPED := chalicelib app.py agent skymesh
# AWS tooling offline: no credentials or metadata service, pip only from the wheels
# scripts/bootstrap.sh fetched for the Lambda package.
OFFLINE := env AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} AWS_EC2_METADATA_DISABLED=true \
	PIP_NO_INDEX=1 PIP_FIND_LINKS=$(CURDIR)/.venv/lambda-wheels JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=18,20

deps:
	@scripts/bootstrap.sh

# The web dashboard (web/): node packages exactly as package-lock.json pins them (npm ci, again
# only when the lock changes), then a type check and the Vite build into web/dist, which the
# local API server serves (skymesh/local/dashboard.py). Rebuilt only when a source changed.
# Node from .venv/node/bin first: where the system's is too old, bootstrap.sh puts a newer one there.
WEB_SOURCES := $(shell find web/src -type f 2>/dev/null) web/index.html web/vite.config.ts web/tsconfig.json
WEB_ENV := env PATH="$(CURDIR)/.venv/node/bin:$$PATH"

web/node_modules/.package-lock.json: web/package-lock.json web/package.json
	cd web && $(WEB_ENV) npm ci --no-audit --no-fund --loglevel=error

web/dist/index.html: web/node_modules/.package-lock.json $(WEB_SOURCES)
	cd web && $(WEB_ENV) npm run --silent build

web: deps web/dist/index.html ## build the web dashboard into web/dist

up: deps web ## start the local stack (DynamoDB Local, Mosquitto, API, scheduler, rule bridge) and the dashboard
	.venv/bin/skymesh local up

test: deps web ## every test: lint and types, unit, functional, integration, browser (headless Chromium), AWS adapters (moto), infra (template, IAM, cfn-lint)
	$(PY) -m ruff check .
	$(PY) -m mypy $(TYPED)
	$(PY) -m pytest -q
	rm -rf build/chalice-prod && $(OFFLINE) .venv/bin/chalice package --stage prod build/chalice-prod
	@$(MAKE) --no-print-directory synth

synth: deps ## the CloudFormation template, offline (no AWS credentials), into cdk.out/; then cfn-lint
	rm -rf cdk.out
	$(OFFLINE) CDK_OUTDIR=$(CURDIR)/cdk.out $(PY) infra/app.py
	.venv/bin/cfn-lint cdk.out/skymesh.template.json

lint: deps
	$(PY) -m ruff check .
	$(PY) -m mypy $(TYPED)

bench: deps ## benchmarks; results and commands in BENCHMARKS.md
	$(PY) bench/run_all.py

fuzz: deps ## schemathesis from /v1/openapi.json, 5,000+ cases against the API on DynamoDB Local; one JSON line
	$(PY) bench/fuzz.py --cases 5000 --examples 345

mutate: deps ## mutation testing (mutmut) of the store's conditions, the stream and the agent runner; slow, not in test
	$(PY) scripts/mutate.py

demo: deps ## a lab of network namespaces: control plane + 4 agents, status table, ping matrix (root)
	$(PY) -m skymesh.lab.demo

.PHONY: demo

clean:
	rm -rf .venv .pytest_cache .ruff_cache .mypy_cache web/node_modules web/dist
