"""Benchmark evaluation of the fine-tuned models (GLUE, QA, NER) and the bias benchmarks.

Every fine-tuned (task, seed) model predicts its dev set; per-example predictions go
to ``{output_dir}/predictions/{task}/seed-{seed}.jsonl`` (so a later gate can compare
two models on the same examples), and ``{output_dir}/metrics.json`` holds::

    {"glue": {"sst2": {"accuracy": <median over seeds>, "main": .., "main_ci": [lo, hi],
                       "spread": {"accuracy": {median, min, max, q1, q3, iqr, n}},
                       "seeds": {"1234": {"accuracy": .., "main_ci": [..]}}, ...},
              "qnli": {"skipped": "<why>"}, "score": .., "score_tasks": [..]},
     "qa": {"exact_match": .., "f1": .., "main": .., ..., "dev": "<how the dev set was made>"},
     "ner": {"precision": .., "recall": .., "f1": .., "main": .., ...},
     "bias": {"crows": {"generator": {..}, "discriminator": {..}},
              "stereoset": {"generator": {..}, "discriminator": {..}}, "eec": {..}}}

Values are fractions (QA's EM/F1 too). ``main`` is the median over seeds of the
task's headline metric; ``main_ci`` the 95% bootstrap interval over dev examples
of the first seed's model (the registered one). The GLUE score is the ELECTRA
paper's: the plain mean of the GLUE tasks' main numbers (CoLA MCC, STS-B
Spearman, accuracy elsewhere), over the tasks listed in ``score_tasks``.

Each task's metrics are also recorded in ``{output_dir}/tasks/{task}/result.json``
with the key they were made under (models, params, code): the Prefect flow evaluates
each task as soon as its fine-tuning ends, and the summary reuses those results.

Also written: ``report/report.md`` (our numbers next to published reference rows) and
``plots/*.png``; both, and one nested run per (task, seed), go to the tracker.
"""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path
from typing import Any

from electra.core import stats as m
from electra.core.config import EvaluateConfig, FinetuneConfig
from electra.core.files import atomic_open, read_json, write_json
from electra.core.keys import content_key
from electra.core.tracking import MetricLogger, NullLogger, flatten
from electra.evaluation.report import write_plots, write_report
from electra.evaluation.results import EEC_TASK, glue_score, place
from electra.tasks.base import task_for


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")


# --- one task over its seeds --------------------------------------------------------

def _summarise(per_seed: dict[str, dict], first_seed: str) -> dict[str, Any]:
    """Median over seeds of every scalar metric, their spread, and the first seed's CI."""
    scalar_names = [k for k, v in per_seed[first_seed].items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool)]
    out: dict[str, Any] = {}
    spread = {}
    for name in scalar_names:
        summary = m.seed_summary([per_seed[s][name] for s in per_seed])
        out[name] = summary["median"]
        spread[name] = summary
    out["main_ci"] = per_seed[first_seed]["main_ci"]
    out["registered_seed"] = int(first_seed)
    out["spread"] = spread
    out["seeds"] = per_seed
    return out


def evaluate_task(task: str, cfg: EvaluateConfig, ft: FinetuneConfig, device, logger: MetricLogger) -> dict[str, Any]:
    """Every seed's model of ``task`` on its dev set; predictions written, metrics summarised.

    A task the finetune stage skipped (no train split) gives ``{"skipped": why}``.
    """
    result_path = Path(cfg.finetune_dir) / task / "result.json"
    if not result_path.is_file():
        raise FileNotFoundError(f"{result_path}: no fine-tuned models for {task!r} (run the finetune stage first)")
    summary = read_json(result_path)
    if "skipped" in summary:
        return {"skipped": summary["skipped"]}
    impl = task_for(ft, task)
    examples, note = impl.dev_split()
    if cfg.max_eval_examples is not None:
        examples = examples[: cfg.max_eval_examples]
    per_seed: dict[str, dict] = {}
    for seed, run in summary["runs"].items():
        with logger.child(f"{task}/seed-{seed}", {"task": task, "seed": seed}) as run_logger:
            scores, rows = impl.evaluate_run(run, examples, cfg.batch_size, device, int(seed))
            _write_jsonl(Path(cfg.output_dir) / "predictions" / task / f"seed-{seed}.jsonl", rows)
            impl.log_run(run_logger, scores)
        per_seed[seed] = scores
    out = _summarise(per_seed, str(summary["seeds"][0]))
    out["dev_examples"] = len(examples)
    if note:
        out["dev"] = note
    return out


# The code a per-task result depends on: a change to any of these makes it stale.
TASK_CODE = ("tasks", "evaluation/evaluate.py", "core/stats.py")


def task_result_key(task: str, cfg: EvaluateConfig, ft: FinetuneConfig) -> str:
    """What one task's evaluation is a function of: its fine-tuned models (their result.json,
    which changes whenever they are retrained), both params sections and the code."""
    return content_key(values=[task, cfg.model_dump(mode="json"), ft.model_dump(mode="json")],
                       paths={"finetuned": Path(cfg.finetune_dir) / task / "result.json"}, code=TASK_CODE)


def task_result_path(cfg: EvaluateConfig, task: str) -> Path:
    """``{output_dir}/tasks/{task}/result.json``: one task's metrics, with the key they were made under."""
    return Path(cfg.output_dir) / "tasks" / task / "result.json"


def evaluate_one(task: str, cfg: EvaluateConfig, ft: FinetuneConfig, logger: MetricLogger | None = None,
                 device: Any = None, reuse: bool = True) -> dict[str, Any]:
    """Evaluate one task and record its metrics in ``tasks/{task}/result.json``.

    With ``reuse``, a recorded result made under the same :func:`task_result_key` (same
    models, params and code) is returned without predicting again: the Prefect flow
    evaluates each task as soon as it is fine-tuned, and the summary step reuses those.
    """
    from electra.core.runtime import resolve_device

    if task not in ft.tasks:
        raise ValueError(f"task {task!r} is not in finetune.tasks ({', '.join(ft.tasks)})")
    key = task_result_key(task, cfg, ft)
    path = task_result_path(cfg, task)
    if reuse and path.is_file():
        try:
            recorded = read_json(path)
        except (OSError, ValueError):
            recorded = {}
        predictions = Path(cfg.output_dir) / "predictions" / task
        if recorded.get("key") == key and ("skipped" in recorded["result"] or predictions.is_dir()):
            return recorded["result"]
    device = device if device is not None else resolve_device(cfg.device)
    section = evaluate_task(task, cfg, ft, device, logger or NullLogger())
    write_json(path, {"task": task, "key": key, "result": section})
    return section


def evaluate_bias(cfg: EvaluateConfig, sst2_model_dir: str | None, device: Any, progress: bool = False) -> dict[str, Any]:
    """The bias benchmarks: intrinsic on the generator and the discriminator, extrinsic on SST-2.

    ``crows`` and ``stereoset`` each hold a ``generator`` section (a masked LM: the
    benchmarks' own scoring) and a ``discriminator`` section (scored by the
    replaced-token-detection head, log P(original) = log sigmoid(-logit)). ``eec``
    scores the registered SST-2 model when one was fine-tuned.
    """
    bias_mod = importlib.import_module("electra.evaluation.bias")
    device = str(device)
    data = Path(cfg.data_dir) / "bias"
    common = {"batch_size": cfg.batch_size, "device": device, "n_bootstrap": cfg.bias_bootstrap, "progress": progress}
    section: dict[str, Any] = {"crows": {}, "stereoset": {}}
    for scorer in ("generator", "discriminator"):
        model_dir = f"{cfg.pretrain_dir}/{scorer}"
        section["crows"][scorer] = bias_mod.crows_pairs(
            model_dir, f"{data}/crows_pairs/crows_pairs_anonymized.csv", scorer=scorer,
            max_pairs=cfg.crows_max_pairs, **common)
        section["stereoset"][scorer] = bias_mod.stereoset(
            model_dir, f"{data}/stereoset/stereoset_dev_flat.jsonl", scorer=scorer,
            max_examples=cfg.stereoset_max_examples, **common)
    if sst2_model_dir:
        section["eec"] = bias_mod.eec(
            sst2_model_dir, f"{data}/eec/Equity-Evaluation-Corpus.csv", max_sentences=cfg.eec_max_sentences,
            **common)
    return section


def evaluate(
    cfg: EvaluateConfig,
    finetune_cfg: FinetuneConfig,
    logger: MetricLogger | None = None,
    progress: bool = True,
    bias: bool = True,
) -> dict:
    """Evaluate every fine-tuned task of ``finetune_cfg.tasks`` and (when ``bias``) the bias benchmarks.

    Writes the predictions, ``metrics.json``, ``report.md`` and ``plots/`` under
    ``cfg.output_dir`` (each file atomically); logs the flattened medians to
    ``logger`` and one nested run per (task, seed). Returns the metrics dict.
    """
    from tqdm.auto import tqdm

    from electra.core.runtime import resolve_device

    logger = logger or NullLogger()
    device = resolve_device(cfg.device)
    out_dir = Path(cfg.output_dir)
    result: dict[str, Any] = {"glue": {}}
    for task in tqdm(list(finetune_cfg.tasks), desc="evaluate", disable=not progress, unit="task"):
        section = evaluate_one(task, cfg, finetune_cfg, logger, device)
        place(result, task, task_for(finetune_cfg, task).group, section)
    glue_score(result)
    if bias:
        eec = Path(cfg.finetune_dir) / EEC_TASK / "result.json"
        eec_model = read_json(eec)["model_dir"] if EEC_TASK in result["glue"]["score_tasks"] else None
        result["bias"] = evaluate_bias(cfg, eec_model, device, progress)
    write_json(out_dir / "metrics.json", result)
    write_report(out_dir / "report" / "report.md", result, finetune_cfg)
    write_plots(out_dir / "plots", result, Path(cfg.finetune_dir))
    numeric = {
        key: float(value)
        for key, value in flatten("", headline_metrics(result)).items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    }
    if numeric:
        logger.log_metrics(numeric)
    logger.log_artifacts(str(out_dir / "plots"), "plots")
    logger.log_artifacts(str(out_dir / "report"), "report")
    return result


def headline_metrics(result: dict) -> dict:
    """The metrics without per-seed copies, spreads, per-type tables and confusion matrices:
    what the tracker and the registry tags get (medians and intervals)."""
    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items()
                    if k not in ("seeds", "spread", "per_type", "confusion", "target_macro")}
        return node
    return strip(result)
