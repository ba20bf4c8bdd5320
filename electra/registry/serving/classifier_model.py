"""MLflow models-from-code entry for a fine-tuned GLUE model: run on load, nothing unpickled."""

import mlflow.models

from electra.registry.pyfunc import SequenceClassifierModel

mlflow.models.set_model(SequenceClassifierModel())
