#!/bin/sh
# Starts `mlflow server` on the PostgreSQL store. The database URL, password included, reaches MLflow
# through MLFLOW_BACKEND_STORE_URI (its --backend-store-uri), never on a command line that `ps` shows.
# The password comes from POSTGRES_PASSWORD (docker/.env) or the file POSTGRES_PASSWORD_FILE names;
# an empty one or the example's `change-me` is refused.
set -eu
if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
  POSTGRES_PASSWORD=$(cat "$POSTGRES_PASSWORD_FILE")
fi
case "${POSTGRES_PASSWORD:-}" in
  "" | change-me)
    echo "error: POSTGRES_PASSWORD is empty or the example's change-me; set a password of your own in docker/.env (e.g. openssl rand -hex 24) and start again." >&2
    exit 2
    ;;
esac
MLFLOW_BACKEND_STORE_URI="postgresql+psycopg://${POSTGRES_USER}:${POSTGRES_PASSWORD}@${POSTGRES_HOST:-postgres}:5432/${POSTGRES_DB}"
export MLFLOW_BACKEND_STORE_URI
unset POSTGRES_PASSWORD
# MLFLOW_SERVER_OPTIONS is split into words on purpose (e.g. `--app-name basic-auth`).
# shellcheck disable=SC2086
exec mlflow server "$@" ${MLFLOW_SERVER_OPTIONS:-}
