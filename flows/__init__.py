"""Prefect door: the ``electra-pipeline`` flow and its deployments."""
