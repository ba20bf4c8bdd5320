"""GLUE dev metrics of the fine-tuned models, and the bias benchmarks.

For each task the model in ``{finetune_dir}/{task}/model`` predicts the dev
split; per-example predictions go to ``{output_dir}/predictions/{task}.jsonl``
and the metrics to ``{output_dir}/metrics.json``::

    {"glue": {"sst2": {"accuracy": .., "main": ..}, ..., "score": .., "score_tasks": [..]},
     "bias": {"crows": {..}, "eec": {..}}}

CrowS-Pairs scores the pretrained generator (a masked LM); EEC scores the
fine-tuned SST-2 model, so it runs only when ``sst2`` is evaluated.
"""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from electra.config import EvaluateConfig
from electra.files import atomic_open, read_json, write_json
from electra.glue import get_task, metrics as glue_metrics, read_task
from electra.tracking import MetricLogger, NullLogger, flatten

# Used when the fine-tuning result.json does not say which length the model was trained with.
DEFAULT_MAX_SEQ_LENGTH = 128


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def _max_seq_length(task_dir: Path) -> int:
    # Evaluate at the length the model was fine-tuned with, recorded by finetune().
    result_path = task_dir / "result.json"
    if result_path.is_file():
        value = read_json(result_path).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            return value
    return DEFAULT_MAX_SEQ_LENGTH


def _write_predictions(path: Path, task: str, examples, outputs: np.ndarray) -> None:
    spec = get_task(task)
    with atomic_open(path, "w", encoding="utf-8") as handle:
        if spec.is_regression:
            for i, (ex, score) in enumerate(zip(examples, outputs, strict=True)):
                row = {"index": i, "line": ex.line, "label": ex.label,
                       "prediction": float(score), "score": float(score)}
                handle.write(json.dumps(row) + "\n")
        else:
            probs = _softmax(outputs.astype(np.float64))
            for i, (ex, p) in enumerate(zip(examples, probs, strict=True)):
                row = {"index": i, "line": ex.line, "label": int(ex.label),
                       "prediction": int(p.argmax()), "probabilities": [float(x) for x in p]}
                handle.write(json.dumps(row) + "\n")


def evaluate_glue(
    cfg: EvaluateConfig, tasks: list[str], device: Any, progress: bool = True
) -> dict[str, Any]:
    """GLUE dev metrics for ``tasks``; writes ``predictions/{task}.jsonl``. Returns the ``glue`` section."""
    from tqdm.auto import tqdm

    from electra.finetune import predict

    out_dir = Path(cfg.output_dir)
    glue_dir = Path(cfg.data_dir) / "glue"
    section: dict[str, Any] = {}
    for task in tqdm(tasks, desc="evaluate glue", disable=not progress, unit="task"):
        task_dir = Path(cfg.finetune_dir) / task
        model_dir = task_dir / "model"
        if not model_dir.is_dir():
            raise FileNotFoundError(
                f"{model_dir}: no fine-tuned model for {task!r} (run the finetune stage for it first)"
            )
        examples = read_task(glue_dir, task, "dev")
        if cfg.max_eval_examples is not None:
            examples = examples[: cfg.max_eval_examples]
        outputs = predict(model_dir, examples, cfg.batch_size, _max_seq_length(task_dir), device)
        labels = [ex.label for ex in examples]
        section[task] = glue_metrics(task, outputs, labels)
        _write_predictions(out_dir / "predictions" / f"{task}.jsonl", task, examples, outputs)
    mains = [section[t]["main"] for t in tasks]
    # The GLUE score of the ELECTRA paper: the plain mean of each task's main metric.
    section["score"] = float(np.mean(mains)) if mains else None
    section["score_tasks"] = list(tasks)
    return section


def evaluate_bias(cfg: EvaluateConfig, tasks: list[str], device: Any) -> dict[str, Any]:
    """CrowS-Pairs on the generator, and EEC on the SST-2 model when ``sst2`` is in ``tasks``."""
    # Looked up at call time (not imported at module load) so evaluate works, and can be
    # tested, independently of electra.bias; sys.modules lookups also let tests stub it.
    bias_mod = importlib.import_module("electra.bias")
    device = str(device)  # a plain string ("cpu", "cuda") whatever the caller resolved it to
    data = Path(cfg.data_dir) / "bias"
    section: dict[str, Any] = {
        "crows": bias_mod.crows_pairs(
            generator_dir=f"{cfg.pretrain_dir}/generator",
            csv_path=f"{data}/crows_pairs/crows_pairs_anonymized.csv",
            max_pairs=cfg.crows_max_pairs,
            batch_size=cfg.batch_size,
            device=device,
        )
    }
    if "sst2" in tasks:
        section["eec"] = bias_mod.eec(
            model_dir=f"{cfg.finetune_dir}/sst2/model",
            csv_path=f"{data}/eec/Equity-Evaluation-Corpus.csv",
            max_sentences=cfg.eec_max_sentences,
            batch_size=cfg.batch_size,
            device=device,
        )
    return section


def evaluate(
    cfg: EvaluateConfig,
    tasks: list[str],
    logger: MetricLogger | None = None,
    progress: bool = True,
    bias: bool = True,
) -> dict:
    """Evaluate the fine-tuned models on GLUE dev and (when ``bias``) run the bias benchmarks.

    Writes ``{output_dir}/predictions/{task}.jsonl`` (index, source line, label,
    prediction, and class probabilities or the regression score) and
    ``{output_dir}/metrics.json`` (atomically). Logs the flattened numeric metrics
    (``glue.sst2.accuracy``, ``bias.eec.gender...``) to ``logger``. With
    ``bias=False`` the ``bias`` section is left out. Returns the metrics dict.
    """
    from electra.runtime import resolve_device

    logger = logger or NullLogger()
    for task in tasks:
        get_task(task)  # unknown names fail before any model is loaded
    device = resolve_device(cfg.device)
    result: dict[str, Any] = {"glue": evaluate_glue(cfg, list(tasks), device, progress)}
    if bias:
        result["bias"] = evaluate_bias(cfg, list(tasks), device)
    write_json(Path(cfg.output_dir) / "metrics.json", result)
    numeric = {
        key: float(value)
        for key, value in flatten("", result).items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    }
    if numeric:
        logger.log_metrics(numeric)
    return result
