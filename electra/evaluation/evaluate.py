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

With ``scratch_control`` (the default) each task is also fine-tuned and evaluated from
random weights of the same architecture (:mod:`electra.tasks.scratch`; outputs under
``{output_dir}/scratch/{task}/``, reused while its key holds), and its section gains::

    "scratch": {<the control's section>}, "gain_over_scratch": <pretrained - scratch, mean over seeds>,
    "gain_over_scratch_ci": [lo, hi],          # paired bootstrap over dev examples
    "gain_over_scratch_per_seed": {..}, "gain_over_scratch_seed_ci": [lo, hi]   # t, several seeds

and metrics.json a top-level ``gain_over_scratch``: per-task gains, how many have their
interval above 0 (``beat`` of ``of``), the GLUE mean gain with ``glue_mean_ci`` and the
report's sentence (``verdict``).

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
import shutil
from pathlib import Path
from typing import Any

from electra.core import stats as m
from electra.core.config import EvaluateConfig, FinetuneConfig
from electra.core.files import atomic_open, read_json, write_json
from electra.core.keys import content_key
from electra.core.tracking import MetricLogger, NullLogger, flatten
from electra.evaluation.report import write_plots, write_report
from electra.evaluation.results import EEC_TASK, glue_score, place, task_sections
from electra.tasks.base import task_for
from electra.tasks.finetune import finetune_task, seeds_of
from electra.tasks.scratch import (INIT_SEED, build_init, gain_replicates, mean_gain, model_facts, recipe_values, scratch_config,
                                   task_gain, verdict)


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


def evaluate_task(task: str, cfg: EvaluateConfig, ft: FinetuneConfig, device, logger: MetricLogger,
                  finetune_dir: Path | None = None, predictions_dir: Path | None = None) -> dict[str, Any]:
    """Every seed's model of ``task`` on its dev set; predictions written, metrics summarised.

    The models are those under ``finetune_dir`` (default ``cfg.finetune_dir``), the rows go
    to ``predictions_dir`` (default ``{output_dir}/predictions/{task}``): the scratch control
    is evaluated by the same code into its own folders. A task the finetune stage skipped
    (no train split) gives ``{"skipped": why}``.
    """
    result_path = Path(finetune_dir or cfg.finetune_dir) / task / "result.json"
    predictions_dir = predictions_dir or Path(cfg.output_dir) / "predictions" / task
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
            _write_jsonl(predictions_dir / f"seed-{seed}.jsonl", rows)
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
    # scratch_control is left out: switching the control on or off leaves the pretrained runs as they are.
    return content_key(values=[task, cfg.model_dump(mode="json", exclude={"scratch_control"}),
                               ft.model_dump(mode="json")],
                       paths={"finetuned": Path(cfg.finetune_dir) / task / "result.json"}, code=TASK_CODE)


def task_result_path(cfg: EvaluateConfig, task: str) -> Path:
    """``{output_dir}/tasks/{task}/result.json``: one task's metrics, with the key they were made under."""
    return Path(cfg.output_dir) / "tasks" / task / "result.json"


def evaluate_pretrained(task: str, cfg: EvaluateConfig, ft: FinetuneConfig, logger: MetricLogger | None = None,
                        device: Any = None, reuse: bool = True) -> dict[str, Any]:
    """Evaluate one task's fine-tuned models and record their metrics in ``tasks/{task}/result.json``.

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
        recorded = _read_record(path)
        predictions = Path(cfg.output_dir) / "predictions" / task
        if recorded.get("key") == key and ("skipped" in recorded["result"] or predictions.is_dir()):
            return recorded["result"]
    device = device if device is not None else resolve_device(cfg.device)
    section = evaluate_task(task, cfg, ft, device, logger or NullLogger())
    write_json(path, {"task": task, "key": key, "result": section})
    return section


def evaluate_one(task: str, cfg: EvaluateConfig, ft: FinetuneConfig, logger: MetricLogger | None = None,
                 device: Any = None, reuse: bool = True) -> dict[str, Any]:
    """Evaluate one task (:func:`evaluate_pretrained`) and, with ``cfg.scratch_control``, its
    scratch control (:func:`evaluate_scratch`); the section then holds ``scratch`` and the
    gain from pretraining with its intervals (:func:`electra.tasks.scratch.task_gain`).

    ``reuse=False`` predicts the fine-tuned models again; the control is reused whenever its
    key matches (it is keyed on everything it depends on, and costs a fine-tuning to redo).
    """
    section = evaluate_pretrained(task, cfg, ft, logger, device, reuse)
    if not cfg.scratch_control or "skipped" in section:
        return section
    control = evaluate_scratch(task, cfg, ft, logger, device)
    section = {**section, "scratch": control}
    return {**section, **task_gain(task_for(ft, task), *_paired_rows(task, cfg, section))}


def _paired_rows(task: str, cfg: EvaluateConfig, section: dict[str, Any]) -> tuple[dict, dict]:
    """Per seed, the pretrained models' prediction rows and the scratch control's."""
    pretrained = Path(cfg.output_dir) / "predictions" / task
    scratch = scratch_dir(cfg) / task / "predictions"
    return ({s: _read_jsonl(pretrained / f"seed-{s}.jsonl") for s in section["seeds"]},
            {s: _read_jsonl(scratch / f"seed-{s}.jsonl") for s in section["scratch"]["seeds"]})


def scratch_summary(result: dict[str, Any], cfg: EvaluateConfig, ft: FinetuneConfig) -> dict[str, Any] | None:
    """metrics.json's top-level ``gain_over_scratch``: every task's gain, how many of them have
    a 95% interval above 0, and the mean gain over the GLUE score's tasks with its interval
    (each task resampled on its own, paired, then the mean of each resample); None without
    a control. ``verdict`` is the report's sentence."""
    sections = {t: s for t, s in task_sections(result).items() if "gain_over_scratch" in s}
    if not sections:
        return None
    glue_tasks = [t for t in result.get("glue", {}).get("score_tasks", []) if t in sections]
    replicates = {}
    for task in glue_tasks:
        point, draws, _ = gain_replicates(task_for(ft, task), *_paired_rows(task, cfg, sections[task]))
        replicates[task] = (point, draws)
    glue = mean_gain(replicates)
    beat = sum(s["gain_over_scratch_ci"][0] > 0 for s in sections.values())
    return {"tasks": {t: s["gain_over_scratch"] for t, s in sections.items()},
            "beat": int(beat), "of": len(sections),
            "glue_mean": glue["mean"], "glue_mean_ci": glue["ci"],
            "glue_mean_low": glue["ci"][0], "glue_mean_high": glue["ci"][1], "glue_tasks": glue["tasks"],
            "verdict": verdict(int(beat), len(sections), glue["mean"], glue["ci"])}


# --- the scratch control ---------------------------------------------------------------

def scratch_dir(cfg: EvaluateConfig) -> Path:
    """``{output_dir}/scratch``: per task, the control's models, predictions and result."""
    return Path(cfg.output_dir) / "scratch"


def scratch_key(task: str, cfg: EvaluateConfig, ft: FinetuneConfig) -> str:
    """What a task's scratch control is a function of: the task (entry and data), the recipe,
    the seeds, the pretrained model's architecture and tokenizer (never its weights), how the
    dev set is predicted, and the code. New pretrained weights leave it valid."""
    architecture, tokenizer = model_facts(ft.model_dir)
    data = {f"data:{i}": file for i, file in enumerate(task_for(ft, task).entry.files())}
    predicting = cfg.model_dump(mode="json", include={"data_dir", "batch_size", "max_eval_examples", "device"})
    return content_key(values=[task, recipe_values(ft, task), seeds_of(ft), architecture, INIT_SEED, predicting],
                       paths={**tokenizer, **data}, code=TASK_CODE)


def evaluate_scratch(task: str, cfg: EvaluateConfig, ft: FinetuneConfig, logger: MetricLogger | None = None,
                     device: Any = None, reuse: bool = True) -> dict[str, Any]:
    """The scratch control of ``task``: fine-tuned from random weights and evaluated, or, with
    ``reuse``, its recorded result when made under the same :func:`scratch_key`.

    Writes under ``{output_dir}/scratch/{task}/``: ``seed-{seed}/model`` (as the finetune
    stage does), ``predictions/seed-{seed}.jsonl`` and ``evaluation.json`` (key + section).
    The random init (``init/``) is removed once trained: it is rebuilt bit for bit from its seed.
    """
    from electra.core.runtime import resolve_device

    folder = scratch_dir(cfg) / task
    key = scratch_key(task, cfg, ft)
    record = folder / "evaluation.json"
    if reuse and record.is_file():
        recorded = _read_record(record)
        if recorded.get("key") == key and (folder / "predictions").is_dir():
            return recorded["result"]
    logger = logger or NullLogger()
    device = device if device is not None else resolve_device(cfg.device)
    init = build_init(ft.model_dir, folder / "init")
    control = scratch_config(ft, init, scratch_dir(cfg))
    with logger.child(f"{task}/scratch", {"task": task, "control": "scratch"}) as control_logger:
        finetune_task(control, task, control_logger, progress=False, device=device)
        section = evaluate_task(task, cfg, control, device, control_logger, finetune_dir=scratch_dir(cfg),
                                predictions_dir=folder / "predictions")
    shutil.rmtree(init, ignore_errors=True)
    write_json(record, {"task": task, "key": key, "result": section})
    return section


def _read_record(path: Path) -> dict[str, Any]:
    try:
        return read_json(path)
    except (OSError, ValueError):
        return {}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


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
    gain = scratch_summary(result, cfg, finetune_cfg) if cfg.scratch_control else None
    if gain is not None:
        result["gain_over_scratch"] = gain
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
