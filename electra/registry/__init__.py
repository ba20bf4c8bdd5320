"""Shipping models: registration in the MLflow model registry, the promotion gate,
aliases and the promotion lock, lineage tags, model cards, and the pyfunc models that
serve each registered version (``serving/``, logged as code). It may import everything
below it (``core`` to ``evaluation``).
"""
