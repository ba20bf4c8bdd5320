"""Foundations every other package stands on: the typed configuration (``params.yaml``
plus profiles), atomic file writes and content hashes, device and precision choices,
MLflow tracking, process pools for data work, logging, and the statistics (bootstrap
intervals) and cache keys shared by the stages. Nothing here knows about models or
tasks; ``core`` imports no other ``electra`` package.
"""
