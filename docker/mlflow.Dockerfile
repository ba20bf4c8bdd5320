# The MLflow tracking server and model registry: Postgres backend store, artifacts on a
# volume or S3-compatible storage (MLFLOW_S3_ENDPOINT_URL and AWS_* from the environment).
#
#   docker build -f docker/mlflow.Dockerfile -t electra-mlflow .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DISABLE_TELEMETRY=true

COPY constraints.txt /tmp/constraints.txt
RUN pip install -c /tmp/constraints.txt "mlflow" "psycopg2-binary>=2.9" "boto3>=1.34" \
 && useradd --create-home --uid 1000 mlflow \
 && mkdir -p /mlartifacts \
 && chown mlflow:mlflow /mlartifacts
USER 1000
EXPOSE 5000

# The backend store URI (with its password) comes from the environment, never the image.
ENTRYPOINT ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000"]
CMD ["--artifacts-destination", "/mlartifacts"]
