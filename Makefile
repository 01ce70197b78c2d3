# Two commands do all set-up: `make run` (the API) and `make test` (the suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 5000
# The embedded demo has a published admin password: listen on this machine only
# unless told otherwise (HOST=0.0.0.0).
HOST ?= 127.0.0.1

.PHONY: run dev test lint bench bench-cpu bench-instructions rehearse storm clean openapi fuzz

$(BIN)/.installed: requirements.txt requirements-dev.txt loadtest/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

# The production server and settings file, in development mode. One worker, never
# recycled: the embedded in-memory stores live in its process (threads share them).
run: $(BIN)/.installed  ## Serve the API through gunicorn (embedded in-memory backends unless MONGO_URI/REDIS_URL are set)
	FLASHCART_ENV=$${FLASHCART_ENV:-development} $(BIN)/gunicorn --config gunicorn.conf.py \
		--bind $(HOST):$(PORT) --workers 1 --threads 8 --max-requests 0 wsgi:app

dev: $(BIN)/.installed  ## Flask's development server, reloading on code changes
	$(BIN)/flask --app wsgi run --reload --host $(HOST) --port $(PORT)

test: $(BIN)/.installed  ## Lint, import contract, security scan, then the whole suite (starts its own redis-server)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-logo
	$(BIN)/bandit -q -r flashcart config.py wsgi.py -c pyproject.toml
	$(BIN)/pytest

openapi: $(BIN)/.installed  ## Regenerate openapi.json (a test fails while it is out of date)
	FLASHCART_ENV=testing $(BIN)/flask --app wsgi openapi write --format json openapi.json

fuzz: $(BIN)/.installed  ## A bigger schemathesis run with fresh random inputs (make test runs a small one)
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-500} FUZZ_RANDOM=1 $(BIN)/pytest tests/api/test_fuzz.py -s

# The storm test's long form (make test runs a shorter one): issue 20's 10 minutes
# of faults on real processes. Its JSON, an HTML report and the timeline's picture go
# to loadtest/results/ (STORM_RESULTS), drawn by bench/report.py even if a check failed.
STORM_RESULTS ?= loadtest/results
storm: $(BIN)/.installed  ## 10 minutes of faults on a drop (Redis primaries, workers, the database); timeline in loadtest/results/
	STORM_SECONDS=$${STORM_SECONDS:-600} STORM_RESULTS=$(STORM_RESULTS) \
		$(BIN)/pytest tests/system/test_storm.py -s -q; status=$$?; \
	latest=$$(ls -t $(STORM_RESULTS)/storm-*.json 2>/dev/null | head -1); \
	[ -z "$$latest" ] || $(BIN)/python -m bench.report "$$latest" --images $(STORM_RESULTS); \
	exit $$status

lint: $(BIN)/.installed  ## ruff, and the import contract (pyproject.toml [tool.importlinter])
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-logo

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .import_linter_cache .grimp_cache

bench: $(BIN)/.installed  ## Benchmark: Redis level, HTTP level (wrk, gunicorn) and a drop rehearsal
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)
	@[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || (apt-get update -qq && apt-get install -y -qq nginx >/dev/null)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

bench-cpu: $(BIN)/.installed  ## CPU per reservation and per request, without server or load (before/after a change)
	$(BIN)/python -m bench.cpu $(BENCH_ARGS)

bench-instructions: $(BIN)/.installed  ## Instructions per request under valgrind: steady where CPU time drifts
	@command -v valgrind >/dev/null || (apt-get update -qq && apt-get install -y -qq valgrind >/dev/null)
	$(BIN)/python -m bench.instructions

# A drop rehearsal against any FlashCart: make rehearse URL=... ADMIN_EMAIL=... ADMIN_PASSWORD=...
# Writes JSON and an HTML report with charts to loadtest/results/ (REHEARSAL_RESULTS).
# Run from here with `python -m`: the locustfile draws with bench/report.py.
SHOPPERS ?= 500
rehearse: $(BIN)/.installed  ## A locust drop against URL; JSON and a report with charts in loadtest/results/
	$(BIN)/python -m locust -f loadtest/locustfile.py --headless --only-summary \
		-u $(SHOPPERS) -r $(SHOPPERS) -t $${DURATION:-60s} --host $(URL)
