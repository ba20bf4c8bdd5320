"""The registered models as MLflow pyfuncs from code: how each is logged.

The classes live in :mod:`electra.registry.pyfunc`, their entry files in
``electra/registry/serving/``; MLflow runs an entry file to build the model, so a
registered version loads by running this reviewed source, never by unpickling an
object. A fine-tuned task's model is logged from its kind's
:meth:`~electra.tasks.base.Task.serving` description (entry file, settings, input
columns and examples, label names): nothing here knows a task kind.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import tempfile
from pathlib import Path

import mlflow
import mlflow.pyfunc

from electra.tasks.base import Task
from electra.tasks.glue_task import label_names

__all__ = ["SERVING_DIR", "label_names", "log_discriminator", "log_task_model", "pip_requirements", "public_version"]

# The pyfunc models are logged as code (models from code): loading one runs our reviewed
# source, never a pickle. The classes live in a module light enough to import at serving.
SERVING_DIR = Path(__file__).resolve().parent / "serving"

# What a serving environment needs to load the logged models.
_REQUIREMENTS = ("torch", "transformers", "tokenizers", "numpy", "pandas", "mlflow")


def public_version(version: str) -> str:
    """``version`` without its PEP 440 local label: ``2.13.0+cpu`` -> ``2.13.0``.

    A local label names a build that only its own index serves (PyTorch's CPU and CUDA
    wheels); PyPI has the public release, so that is what a logged requirement pins.
    """
    return version.split("+", 1)[0]


def pip_requirements() -> list[str]:
    """The logged models' pip requirements: this environment's versions, installable from PyPI."""
    reqs = []
    for name in _REQUIREMENTS:
        try:
            reqs.append(f"{name}=={public_version(importlib.metadata.version(name))}")
        except importlib.metadata.PackageNotFoundError:
            reqs.append(name)
    return reqs


def _log_pyfunc(*, name: str, entry: str, artifacts: dict[str, str], settings: dict | None = None, **kwargs):
    """``mlflow.pyfunc.log_model`` of a model from code: ``electra/registry/serving/<entry>``, with the
    ``electra`` package shipped beside it (it loads without the package installed) and the
    PyPI requirements. ``settings`` travel as the artifact ``settings`` (``serving.json``),
    not as ``model_config``, which MLflow also logs as run params, where the settings of the
    models registered by one run collide. Logging runs the model on its input example: quietly.
    """
    from electra.registry.pyfunc import quiet_loading

    with tempfile.TemporaryDirectory(prefix="electra-settings-") as tmp, quiet_loading():
        if settings is not None:
            path = Path(tmp) / "serving.json"
            path.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            artifacts = {**artifacts, "settings": str(path)}
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(SERVING_DIR / entry),
            artifacts=artifacts,
            pip_requirements=pip_requirements(),
            code_paths=[str(Path(__file__).resolve().parents[1])],   # the whole electra package
            **kwargs,
        )


# GLUE's label ids by name (the names of the Hugging Face ``glue`` dataset). SST-2, MRPC and
# CoLA store ids ("0"/"1") in their TSVs; RTE and QNLI store the names themselves.


def _labelled_copy(model_dir: str | Path, names: list[str] | None, target: Path) -> Path:
    """``model_dir`` with ``id2label``/``label2id`` set to ``names`` in its config.json.

    The weights are hard links where the file system allows (no copy of a large model);
    config.json is a new file, so the fine-tuned model itself is left as it was.
    """
    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(model_dir, target, copy_function=link_or_copy)
    if names is not None:
        config_path = target / "config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config["id2label"] = {str(i): label for i, label in enumerate(names)}
        config["label2id"] = {label: i for i, label in enumerate(names)}
        config_path.unlink()          # a hard link: never write through to the original
        config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return target


def log_discriminator(pretrain_dir: Path, name: str):
    import pandas as pd
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, DataType, Schema

    output = pd.DataFrame([{"tokens": ["[CLS]"], "replaced_probability": [0.5]}])
    signature = ModelSignature(inputs=Schema([ColSpec(DataType.string)]),
                               outputs=infer_signature(None, output).outputs)
    return _log_pyfunc(
        name="discriminator", entry="discriminator_model.py",
        artifacts={"discriminator": str(pretrain_dir / "discriminator")},
        signature=signature, input_example=["the chef cooked the meal ."], registered_model_name=name)


def log_task_model(task: Task, summary: dict, name: str):
    """The first seed's model of ``task`` (fixed in advance, never the best on dev), with its
    tokenizer, as the pyfunc its kind describes; registered as ``name``."""
    import pandas as pd
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, DataType, Schema

    spec = task.serving(summary)
    inputs = Schema([ColSpec(DataType.string, column) if column else ColSpec(DataType.string)
                     for column in spec.input_columns])
    signature = ModelSignature(inputs=inputs, outputs=infer_signature(None, pd.DataFrame(spec.output_example)).outputs)
    example = pd.DataFrame(spec.input_example) if isinstance(spec.input_example, dict) else spec.input_example
    with tempfile.TemporaryDirectory(prefix="electra-register-") as tmp:
        # The logged copy answers label names: its config's id2label is rewritten (hard links otherwise).
        model_dir = (_labelled_copy(summary["model_dir"], spec.label_names, Path(tmp) / "model")
                     if spec.label_names is not None else Path(summary["model_dir"]))
        return _log_pyfunc(name=f"finetuned-{task.name}", entry=spec.entry, artifacts={"model": str(model_dir)},
                           settings=spec.settings, signature=signature, input_example=example,
                           registered_model_name=name)
