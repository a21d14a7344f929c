-- Runs once, when the PostgreSQL volume is first initialised: a second database for Optuna studies
-- (MLflow and Optuna both keep an alembic_version table, so they cannot share one database).
CREATE DATABASE optuna;
