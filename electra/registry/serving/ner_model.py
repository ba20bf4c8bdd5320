"""MLflow models-from-code entry for the NER (token classification) model: run on load, nothing unpickled."""

import mlflow.models

from electra.registry.pyfunc import TokenClassifierModel

mlflow.models.set_model(TokenClassifierModel())
