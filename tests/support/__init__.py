"""Helpers shared by the integration test packages (tests/service, tests/reliability).

- `cluster`: uvicorn (`nowcast serve`) and `nowcast worker` processes on one Redis key prefix,
  the `deployment` context manager that sets one up and tears it down, and HTTP helpers;
- `queue_probe`: a read-only view of a deployment's Redis keys, for assertions;
- `redis_server`: a private `redis-server` that tests may stop, kill and restart;
- `stores`: `JobStore` backends (embedded and Redis) for the store contract tests.
"""
