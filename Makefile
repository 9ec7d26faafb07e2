.PHONY: test demo check bench services-up services-down changelog

test:          ## the whole test suite (embedded server unless MONGODB_URI is set)
	./scripts/test.sh

demo:          ## the quickstart demo
	./scripts/demo.sh

check:         ## ruff lint + format check, mypy --strict
	./scripts/check.sh

bench:         ## the benchmark suite (prints a table, writes benchmarks/results.json)
	./scripts/bench.sh

services-up:   ## a mongo:8 single-node replica set on 27017 (needs Docker)
	docker compose up -d --wait

services-down:
	docker compose down

changelog:     ## fold changelog.d/ into CHANGELOG.md for a release
	.venv/bin/towncrier build --yes
