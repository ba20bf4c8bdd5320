"""Stage ``finetune``: the pretrained discriminator fine-tuned on every task of ``finetune.tasks``.

Each task is an entry of ``finetune.catalog`` and its kind's :class:`~electra.tasks.base.Task`
does the work (its splits, features, head and one seed's run, with the shared recipe of
:mod:`electra.tasks.recipe`); this module only loops over tasks and seeds and writes results.

Outputs, per task and seed: ``{output_dir}/{task}/seed-{seed}/model/`` (model +
tokenizer, swapped into place only once complete); per task
``{output_dir}/{task}/result.json``. Each task writes only its own folder, so the
tasks fan out (Prefect ``.map``, DVC ``foreach``); a run over all tasks adds
``{output_dir}/summary.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from electra.core.config import FinetuneConfig
from electra.core.files import read_json, write_json
from electra.core.runtime import resolve_device
from electra.core.tracking import MetricLogger, NullLogger
from electra.tasks.base import task_for


def seeds_of(cfg: FinetuneConfig) -> list[int]:
    """The fine-tuning seeds: ``seed, seed + 1, ...`` (``seeds`` of them)."""
    return [cfg.seed + i for i in range(cfg.seeds)]


def _check_inputs(cfg: FinetuneConfig, tasks: Sequence[str]) -> dict[str, str]:
    """Fail before any training when a task cannot run, rather than after the first one.

    Returns the tasks that cannot be trained here (QNLI has no train split), with the
    reason: they are skipped and reported as evaluation-only, not trained.
    """
    if not Path(cfg.model_dir).is_dir():
        raise FileNotFoundError(
            f"{cfg.model_dir}: pretrained discriminator not found (run the pretrain stage first)"
        )
    skipped: dict[str, str] = {}
    for name in tasks:
        reason = task_for(cfg, name).skip_reason()
        if reason is not None:
            skipped[name] = reason
    return skipped


def finetune_task(cfg: FinetuneConfig, task: str, logger: MetricLogger | None = None, progress: bool = True,
                  device: Any = None) -> dict[str, Any]:
    """Fine-tune the pretrained discriminator on one task, once per seed.

    Writes ``{output_dir}/{task}/seed-{seed}/model/`` (model + tokenizer) and
    ``.../result.json`` per run, and ``{output_dir}/{task}/result.json``: every seed's
    result, with ``model_dir`` = the first seed's model (the one registered: fixed in
    advance, never the best on dev). A task that cannot be trained here (QNLI: no train
    split) is not: its ``result.json`` says ``skipped`` and why. Each seed is a nested run
    under ``logger`` with its loss curve. Returns the task's ``result.json`` content.

    One task writes only under its own folder, so tasks can run in parallel (the Prefect
    fan-out, the ``finetune@<task>`` DVC stages) and in any order.
    """
    impl = task_for(cfg, task)          # ValueError when the task is not selected
    logger = logger or NullLogger()
    task_dir = Path(cfg.output_dir) / task
    skipped = _check_inputs(cfg, [task])
    if task in skipped:
        summary: dict[str, Any] = {"task": task, "kind": impl.kind, "skipped": skipped[task]}
        write_json(task_dir / "result.json", summary)
        return summary
    device = device if device is not None else resolve_device(cfg.device)
    runs: dict[str, dict[str, Any]] = {}
    for seed in seeds_of(cfg):
        run_dir = task_dir / f"seed-{seed}"
        with logger.child(f"{task}/seed-{seed}", {"task": task, "seed": str(seed)}) as run_logger:
            result = impl.finetune_seed(seed, run_dir, run_logger, progress, device)
        result = {"task": task, "seed": seed, "device": str(device), **result}
        write_json(run_dir / "result.json", result)
        runs[str(seed)] = result
    first = runs[str(seeds_of(cfg)[0])]
    summary = {
        "task": task,
        "kind": impl.kind,
        "seeds": seeds_of(cfg),
        "model_dir": first["model_dir"],
        "max_seq_length": first["max_seq_length"],
        "train_loss": float(np.median([r["train_loss"] for r in runs.values()])),
        "seconds": sum(r["seconds"] for r in runs.values()),
        "runs": runs,
    }
    write_json(task_dir / "result.json", summary)
    return summary


def finetune_results(finetune_dir: str | Path, tasks: Sequence[str]) -> tuple[dict[str, dict], dict[str, str]]:
    """The per-task ``result.json`` files under ``finetune_dir``: (trained tasks, skipped tasks with why).

    Raises FileNotFoundError naming the first task that has not been fine-tuned.
    """
    trained: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    for task in tasks:
        path = Path(finetune_dir) / task / "result.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no fine-tuned models for {task!r} (run the finetune stage first)")
        result = read_json(path)
        if "skipped" in result:
            skipped[task] = result["skipped"]
        else:
            trained[task] = result
    return trained, skipped


def finetune(cfg: FinetuneConfig, logger: MetricLogger | None = None, progress: bool = True,
             tasks: Sequence[str] | None = None) -> dict:
    """Fine-tune the pretrained discriminator on ``tasks`` (default: every task in ``cfg.tasks``).

    Each task is :func:`finetune_task`. All inputs are checked before the first task
    trains. A run over every task also writes ``{output_dir}/summary.json``.

    Returns ``{"tasks": {task: {"model_dir", "train_loss", "seconds"}}, "skipped", "output_dir"}``.
    """
    chosen = list(tasks) if tasks is not None else list(cfg.tasks)
    unknown = [t for t in chosen if t not in cfg.tasks]
    if unknown:
        raise ValueError(f"tasks {unknown} are not in finetune.tasks ({', '.join(cfg.tasks)})")
    _check_inputs(cfg, chosen)
    device = resolve_device(cfg.device)
    output_dir = Path(cfg.output_dir)
    done: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for task in chosen:
        summary = finetune_task(cfg, task, logger, progress, device)
        if "skipped" in summary:
            skipped[task] = summary["skipped"]
        else:
            done[task] = {k: summary[k] for k in ("model_dir", "train_loss", "seconds")}
    if tasks is None:
        write_json(output_dir / "summary.json", {
            "tasks": list(done), "skipped": skipped, "seeds": seeds_of(cfg),
            "results": {t: str(output_dir / t / "result.json") for t in done},
        })
    return {"tasks": done, "skipped": skipped, "output_dir": str(output_dir)}
