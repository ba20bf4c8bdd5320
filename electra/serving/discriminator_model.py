"""MLflow models-from-code entry for the discriminator: run on load, nothing unpickled."""

import mlflow.models

from electra.pyfunc_models import DiscriminatorModel

mlflow.models.set_model(DiscriminatorModel())
