"""Models-from-code entry points: MLflow runs one of these files to build a pyfunc model."""
