"""MLflow models-from-code entry for the discriminator: run on load, nothing unpickled."""

import mlflow.models

from electra.registry.pyfunc import DiscriminatorModel

mlflow.models.set_model(DiscriminatorModel())
