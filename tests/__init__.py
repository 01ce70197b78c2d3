"""FlashCart's test suite, grouped by what the tests prove.

- unit/: one module's rules on its own (the inventory engine, redis_wire, config, the
  MongoDB stand-in), against the real redis-server where Redis is involved;
- api/: the API in-process through Flask's test client, by domain (accounts, products,
  sales, orders, idempotency, validation, caching, observability, the OpenAPI contract
  and its fuzzing, the operator CLI);
- security/: the attacks, and what stops them;
- system/: real processes together: concurrency, crash recovery, dependency failures,
  Redis Cluster, several gunicorn hosts, chaos, slow clients behind nginx, the image,
  `make run`, the production server settings, MongoDB at scale.

Fixtures are in conftest.py; helpers that tests import are in support/. The
benchmark's own tests are in bench/tests/; nothing here imports bench/ (bench/ may
import support/), as unit/test_suite_layout.py checks.
"""
