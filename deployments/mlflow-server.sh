#!/usr/bin/env bash
# An MLflow tracking server: PostgreSQL backend store, artifacts proxied to an object store.
# Environment: MLFLOW_DB_URI (postgresql+psycopg2://user:pass@host:5432/mlflow; pip install psycopg2-binary), MLFLOW_ARTIFACTS (s3://bucket/mlflow, or file:///srv/mlflow-artifacts
# on the server: clients reach it through the proxy only),
# MLFLOW_HOST (default 127.0.0.1: put an authenticating reverse proxy in front before opening it wider),
# MLFLOW_PORT (5000), MLFLOW_WORKERS (4), MLFLOW_UVICORN_OPTS (extra uvicorn options, e.g.
# "--timeout-worker-healthcheck 60" on a busy host, where uvicorn otherwise restarts workers that
# answer its 5 s health check late, and the server never answers).
set -euo pipefail
exec mlflow server \
  ${MLFLOW_UVICORN_OPTS:+--uvicorn-opts "$MLFLOW_UVICORN_OPTS"} \
  --backend-store-uri "${MLFLOW_DB_URI:?set MLFLOW_DB_URI}" \
  --artifacts-destination "${MLFLOW_ARTIFACTS:?set MLFLOW_ARTIFACTS}" \
  --serve-artifacts \
  --host "${MLFLOW_HOST:-127.0.0.1}" --port "${MLFLOW_PORT:-5000}" \
  --workers "${MLFLOW_WORKERS:-4}"
