-- One Postgres, two databases: MLflow's (created by POSTGRES_DB) and Prefect's.
CREATE DATABASE prefect OWNER electra;
