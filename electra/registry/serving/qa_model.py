"""MLflow models-from-code entry for the question-answering model: run on load, nothing unpickled."""

import mlflow.models

from electra.registry.pyfunc import QuestionAnsweringModel

mlflow.models.set_model(QuestionAnsweringModel())
