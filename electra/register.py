"""Stage ``register``: log the models to MLflow, register versions, gate, set aliases.

The discriminator becomes a version of ``register.model_name`` (a pyfunc that
returns per-token replaced-token probabilities), each fine-tuned model a
version of ``<task_model_prefix><task>`` (``mlflow.transformers``,
text-classification). Every version carries its lineage as tags and gets the
alias ``challenger``; ``champion`` moves to it only when every gate in
``params.yaml`` passes. Moving the alias is the last step, so a crash never
leaves a half-promoted model.
"""

from __future__ import annotations

import importlib.metadata
import os
import time
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import yaml

from electra.config import Params
from electra.evaluate import headline_metrics
from electra.files import read_json, write_json
from electra.tracking import flatten, git_info

# What a serving environment needs to load the logged models.
_REQUIREMENTS = ("torch", "transformers", "tokenizers", "numpy", "pandas", "mlflow")


def _pip_requirements() -> list[str]:
    reqs = []
    for name in _REQUIREMENTS:
        try:
            reqs.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            reqs.append(name)
    return reqs


def data_pointer_hash(path: str | Path = "data.dvc") -> str:
    """The md5 that ``data.dvc`` pins for ``data/`` ("unknown" when there is no pointer)."""
    p = Path(path)
    if not p.exists():
        return "unknown"
    try:
        outs = yaml.safe_load(p.read_text()).get("outs", [])
        return str(outs[0].get("md5", "unknown"))
    except (yaml.YAMLError, AttributeError, IndexError) as exc:
        raise ValueError(f"{p}: not a valid DVC pointer file: {exc}") from None


def dvc_lock_hashes(path: str | Path = "dvc.lock") -> dict[str, str]:
    """Output hashes per stage from ``dvc.lock`` (empty when the pipeline ran outside DVC)."""
    p = Path(path)
    if not p.exists():
        return {}
    lock = yaml.safe_load(p.read_text()) or {}
    hashes = {}
    for stage, entry in (lock.get("stages") or {}).items():
        for out in entry.get("outs", []) or []:
            hashes[f"{stage}:{out['path']}"] = out.get("md5", "")
    return hashes


def check_gates(metrics: dict[str, Any], min_metrics: dict[str, float], max_metrics: dict[str, float]) -> tuple[bool, list[dict]]:
    """Compare flattened metrics with floors and ceilings; a missing metric fails its gate."""
    flat = flatten("", metrics)
    checks = []
    for key, floor in sorted(min_metrics.items()):
        value = flat.get(key)
        ok = isinstance(value, int | float) and value >= floor
        checks.append({"metric": key, "rule": f">= {floor}", "value": value, "passed": bool(ok)})
    for key, ceiling in sorted(max_metrics.items()):
        value = flat.get(key)
        ok = isinstance(value, int | float) and value <= ceiling
        checks.append({"metric": key, "rule": f"<= {ceiling}", "value": value, "passed": bool(ok)})
    return all(c["passed"] for c in checks), checks


class DiscriminatorModel(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc: text in, per-token replaced-token probabilities out.

    Input: a DataFrame with a ``text`` column (or a list of strings). Output: one
    row per text with the word pieces and P(replaced) for each.
    """

    def load_context(self, context) -> None:
        from transformers import AutoTokenizer, ElectraForPreTraining

        folder = context.artifacts["discriminator"]
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = ElectraForPreTraining.from_pretrained(folder).eval()

    def predict(self, context, model_input, params=None):
        import pandas as pd
        import torch

        texts = list(model_input["text"]) if hasattr(model_input, "columns") else list(model_input)
        rows = []
        with torch.no_grad():
            for text in texts:
                enc = self.tokenizer(text, return_tensors="pt", truncation=True, max_length=512)
                probs = torch.sigmoid(self.model(**enc).logits[0]).tolist()
                tokens = self.tokenizer.convert_ids_to_tokens(enc["input_ids"][0])
                rows.append({"tokens": tokens, "replaced_probability": probs})
        return pd.DataFrame(rows)


class QuestionAnsweringModel(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc: (question, context) rows in, the extracted answer span out.

    transformers 5 removed its question-answering pipeline, so the QA model ships
    with our own windowing and span search (``electra.qa``), the code it was
    evaluated with. Input: a DataFrame with ``question`` and ``context`` columns.
    Output: one ``answer`` per row (a substring of its context).
    """

    def load_context(self, context) -> None:
        from transformers import AutoTokenizer, ElectraForQuestionAnswering

        folder = context.artifacts["model"]
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = ElectraForQuestionAnswering.from_pretrained(folder).eval()
        self.settings = dict(context.model_config or {})

    def predict(self, context, model_input, params=None):
        import pandas as pd

        from electra.qa import QAExample, predict_qa

        examples = [QAExample(id=str(i), title="", context=str(row["context"]), question=str(row["question"]),
                              answers=()) for i, row in enumerate(model_input.to_dict("records"))]
        answers = predict_qa(self.model, self.tokenizer, examples, batch_size=16,
                             max_seq_length=int(self.settings.get("max_seq_length", 384)),
                             doc_stride=int(self.settings.get("doc_stride", 128)), device="cpu")
        return pd.DataFrame({"answer": [answers.get(ex.id, "") for ex in examples]})


def _log_qa_model(model_dir: str, run: dict, name: str):
    """Log and register the QA model as a :class:`QuestionAnsweringModel` pyfunc."""
    import pandas as pd
    from mlflow.models import infer_signature

    example = pd.DataFrame({"question": ["Who cooked the meal?"], "context": ["The chef cooked the meal."]})
    return mlflow.pyfunc.log_model(
        name="finetuned-qa",
        python_model=QuestionAnsweringModel(),
        artifacts={"model": model_dir},
        model_config={"max_seq_length": run["max_seq_length"], "doc_stride": run.get("doc_stride", 128)},
        signature=infer_signature(example, pd.DataFrame({"answer": ["The chef"]})),
        input_example=example,
        pip_requirements=_pip_requirements(),
        code_paths=[str(Path(__file__).resolve().parent)],
        registered_model_name=name,
    )


def _set_version_tags(client, name: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value)[:5000])


def register(params: Params, progress: bool = True) -> dict:
    """Log, register, gate and alias the discriminator and the fine-tuned models.

    Must run inside an active MLflow run (``electra.stages.run_stage`` opens it).
    """
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    cfg = params.register
    started = time.time()
    pretrain_dir = Path(cfg.pretrain_dir)
    pretrain_result = read_json(pretrain_dir / "result.json")
    pretrain_run = read_json(pretrain_dir / "run.json") if (pretrain_dir / "run.json").exists() else {}
    metrics = read_json(Path(cfg.evaluate_dir) / "metrics.json")
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("register must run inside an MLflow run (use electra.stages.run_stage)")
    client = MlflowClient()

    stage_runs = {}
    for stage, folder in (("pretrain", cfg.pretrain_dir), ("finetune", cfg.finetune_dir), ("evaluate", cfg.evaluate_dir)):
        run_file = Path(folder) / "run.json"
        if run_file.exists():
            stage_runs[f"{stage}_run_id"] = read_json(run_file)["mlflow_run_id"]
    lineage = {
        **git_info(),
        "data_dvc_md5": data_pointer_hash(),
        "params_hash": params.params_hash(),
        "profile": params.profile,
        "register_run_id": run.info.run_id,
        "pretrain_run_id": pretrain_run.get("mlflow_run_id", "unknown"),
        **stage_runs,
        "discriminator_sha256": pretrain_result["hashes"]["discriminator"],
        "tokenize_hash": str(pretrain_result.get("tokenize_hash")),
        "objective": pretrain_result.get("objective", "electra"),
        "torch_version": importlib.metadata.version("torch"),
        "transformers_version": importlib.metadata.version("transformers"),
        "electra_version": _package_version("electra-pipeline"),
    }
    flow_run = os.environ.get("PREFECT__FLOW_RUN_ID")
    if flow_run:
        lineage["prefect_flow_run_id"] = flow_run
    for key, digest in dvc_lock_hashes().items():
        lineage[f"dvc_lock.{key}"] = digest
    mlflow.set_tags({f"lineage.{k}": v for k, v in lineage.items()})

    passed, checks = check_gates(metrics, cfg.min_metrics, cfg.max_metrics)
    gate_tags = {
        "gate.passed": str(passed).lower(),
        "gate.checks": "; ".join(f"{c['metric']} {c['rule']}: {c['value']} ({'ok' if c['passed'] else 'FAIL'})" for c in checks) or "none",
    }
    flat_metrics = {k: v for k, v in flatten("", headline_metrics(metrics)).items()
                    if isinstance(v, int | float) and not isinstance(v, bool)}
    mlflow.log_metrics({k: float(v) for k, v in flat_metrics.items() if len(k) < 250})

    # 1. The discriminator, as a pyfunc that loads back for replaced-token detection.
    example = pd.DataFrame({"text": ["the chef cooked the meal ."]})
    wrapper = DiscriminatorModel()
    signature = infer_signature(example, pd.DataFrame([{"tokens": ["[CLS]"], "replaced_probability": [0.5]}]))
    info = mlflow.pyfunc.log_model(
        name="discriminator",
        python_model=wrapper,
        artifacts={"discriminator": str(pretrain_dir / "discriminator")},
        signature=signature,
        input_example=example,
        pip_requirements=_pip_requirements(),
        # The wrapper class lives in this package: ship it so the model loads without it installed.
        code_paths=[str(Path(__file__).resolve().parent)],
        registered_model_name=cfg.model_name,
    )
    versions = {cfg.model_name: str(info.registered_model_version)}

    # 2. Each fine-tuned model (the first seed's: fixed in advance, never the best on dev),
    #    with its tokenizer: a transformers pipeline of its kind, or the QA pyfunc.
    task_metric_prefix: dict[str, str] = {}
    if cfg.register_finetuned:
        import transformers

        from electra.finetune import task_kind

        summary_path = Path(cfg.finetune_dir) / "summary.json"
        trained = read_json(summary_path)["tasks"] if summary_path.is_file() else []
        for task in trained:
            kind = task_kind(task)
            summary = read_json(Path(cfg.finetune_dir) / task / "result.json")
            model_dir = summary["model_dir"]
            name = f"{cfg.task_model_prefix}{task}"
            task_metric_prefix[name] = f"glue.{task}." if kind == "glue" else f"{task}."
            if kind == "qa":
                first_run = summary["runs"][str(summary["seeds"][0])]
                versions[name] = str(_log_qa_model(model_dir, first_run, name).registered_model_version)
                continue
            auto_class, pipeline_task = _FLAVOURS[kind]
            model = getattr(transformers, auto_class).from_pretrained(model_dir)
            tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
            task_info = mlflow.transformers.log_model(
                transformers_model={"model": model, "tokenizer": tokenizer},
                name=f"finetuned-{task}",
                task=pipeline_task,
                pip_requirements=_pip_requirements(),
                registered_model_name=name,
            )
            versions[name] = str(task_info.registered_model_version)

    # 3. Tags first, aliases last: a crash before this point leaves no alias moved.
    aliases: dict[str, list[str]] = {}
    for name, version in versions.items():
        prefix = task_metric_prefix.get(name)
        task_metrics = {k: v for k, v in flat_metrics.items() if prefix and k.startswith(prefix)}
        _set_version_tags(client, name, version, {**lineage, **gate_tags, **{f"metric.{k}": v for k, v in task_metrics.items()}})
        if name == cfg.model_name:
            _set_version_tags(client, name, version, {f"metric.{k}": v for k, v in flat_metrics.items()})
        client.set_registered_model_alias(name, "challenger", version)
        aliases[name] = ["challenger"]
        if passed:
            client.set_registered_model_alias(name, "champion", version)
            aliases[name].append("champion")

    report = {
        "stage": "register",
        "versions": versions,
        "aliases": aliases,
        "gate": {"passed": passed, "checks": checks},
        "lineage": lineage,
        "seconds": round(time.time() - started, 3),
        "tracking_uri": mlflow.get_tracking_uri(),
    }
    write_json(Path(cfg.output_dir) / "registration.json", report)
    return {
        "model_name": cfg.model_name,
        "version": versions[cfg.model_name],
        "versions": versions,
        "champion": passed,
        "gate_passed": passed,
        "output_dir": cfg.output_dir,
    }


# Fine-tuned model kind -> (transformers auto class, pipeline task for mlflow.transformers);
# QA is logged as a pyfunc instead (transformers 5 has no question-answering pipeline).
_FLAVOURS = {
    "glue": ("AutoModelForSequenceClassification", "text-classification"),
    "ner": ("AutoModelForTokenClassification", "token-classification"),
}


def _package_version(name: str) -> str:
    """The installed version of ``name``, or "source" when it runs from a checkout uninstalled."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "source"
