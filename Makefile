# One entry point. `make run` starts the node on its embedded default (SQLite, sample
# services); `make test` runs the whole test suite (installing what it needs).
.PHONY: run test unit lint check-config bench bench-v1 bench-stores bench-cluster bench-failover clean

run:
	scripts/run-node.sh

test:
	scripts/test.sh

lint:
	scripts/setup-venv.sh
	scripts/lint.sh

unit:
	scripts/setup-venv.sh
	.venv/bin/pytest -q tests/unit

check-config:
	scripts/setup-venv.sh
	.venv/bin/infernet-node check-config

bench:
	scripts/setup-venv.sh
	.venv/bin/python bench/run.py

# /v1 against the real llm container (Docker, infernet-local/llm:latest) and the trivial chat service.
bench-v1:
	scripts/setup-venv.sh
	.venv/bin/python bench/v1.py

# Issue 14: one node on PostgreSQL vs SQLite; two nodes vs one on PostgreSQL; chain failover
# (PostgreSQL from scripts/postgres.sh, started when needed; failover needs anvil: tools/chain).
bench-stores:
	scripts/setup-venv.sh
	.venv/bin/python bench/stores.py

bench-cluster:
	scripts/setup-venv.sh
	.venv/bin/python bench/cluster.py

bench-failover:
	scripts/setup-venv.sh
	.venv/bin/python bench/failover.py

clean:
	rm -rf data .pytest_cache
