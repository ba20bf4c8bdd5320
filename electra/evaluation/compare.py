"""Stage ``compare``: replaced-token detection against masked LM at equal training compute.

The ELECTRA paper's claim (Clark et al. 2020, Fig. 1 and Table 8: at equal compute,
replaced-token detection fine-tunes better than BERT's masked LM), checked on the
user's own corpus::

    budget = compare.budget_flops, or compare.electra_steps x the ELECTRA step's FLOPs
    for objective in (electra, mlm):
        steps = budget / FLOPs per step of that objective     (MLM: no generator, more steps)
        pretrain the same discriminator-sized encoder, same optimizer, schedule shape
        (warm-up fraction, linear decay to 0 at its own last step) and data order,
        saving the discriminator at compare.fractions of its steps
        for each snapshot: fine-tune on compare.tasks x compare.seeds, evaluate on dev

The FLOPs are the analytical count of :func:`electra.pretraining.flops.flops_breakdown` (forward
x 3 for forward and backward), per token, times the tokens of a step (every position
of ``batch_size x grad_accum_steps`` sequences of ``max_seq_length``).

Output layout (``compare.output_dir``)::

    electra/pretrain/            the ELECTRA run (snapshots/step-NNNNNNN/ among its outputs)
    electra/step-NNNNNNN/        fine-tuning results and dev predictions (not the weights), scores.json
    mlm/...                      the same for the MLM run
    report.md                    table, FLOP count, conclusion
    glue_vs_flops.png            GLUE score against training FLOPs, both objectives
    results.json                 every number of the report

Every (objective, snapshot) point keeps its ``scores.json`` keyed by what it was made
from, so a rerun after a kill redoes only the missing points (pretraining resumes from
its checkpoints). The GLUE score is the paper's: the mean of the tasks' main metrics
(CoLA MCC, STS-B Spearman, accuracy elsewhere). Intervals are Student-t intervals over
the fine-tuning seeds; the two objectives are compared seed by seed (paired: a seed
fixes the same head initialisation and data order for both).
"""

from __future__ import annotations

import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from electra.core.config import CompareConfig, EvaluateConfig, FinetuneConfig, PretrainConfig
from electra.core.files import atomic_dir, atomic_open, read_json, write_json
from electra.core.keys import content_key
from electra.core.stats import t_interval
from electra.pretraining.flops import flops_breakdown, training_flops_per_token
from electra.core.tracking import MetricLogger, NullLogger

OBJECTIVES = ("electra", "mlm")


@dataclass(frozen=True)
class Plan:
    """One objective's share of the budget."""

    objective: str
    flops_per_token: float           # training (forward + backward)
    tokens_per_step: int
    flops_per_step: float
    steps: int
    warmup_steps: int
    snapshot_steps: list[int]
    snapshot_flops: list[float]
    forward_breakdown: dict[str, float]   # forward FLOPs per token, by component


def plan_budget(cfg: CompareConfig, pretrain: PretrainConfig, seq_len: int, vocab_size: int) -> dict[str, Plan]:
    """Steps, warm-up and snapshot steps of each objective under one FLOP budget."""
    tokens_per_step = pretrain.batch_size * pretrain.grad_accum_steps * seq_len
    per_step = {
        objective: training_flops_per_token(pretrain.model, seq_len, vocab_size, pretrain.mask_prob, objective)
        * tokens_per_step
        for objective in OBJECTIVES
    }
    budget = cfg.budget_flops if cfg.budget_flops is not None else cfg.electra_steps * per_step["electra"]
    plans = {}
    for objective in OBJECTIVES:
        steps = int(budget // per_step[objective])
        if steps < 1:
            raise ValueError(f"compare: a budget of {budget:.3g} FLOPs buys no {objective} step "
                             f"({per_step[objective]:.3g} FLOPs each)")
        # The schedule's shape is the same for both: warm-up over the same fraction of the run.
        warmup = min(steps, round(pretrain.warmup_steps / pretrain.max_steps * steps))
        snapshot_steps = sorted({max(1, round(f * steps)) for f in cfg.fractions})
        if len(snapshot_steps) != len(cfg.fractions):
            raise ValueError(f"compare: fractions {cfg.fractions} of {steps} {objective} steps "
                             "fall on the same step; raise the budget or use fewer fractions")
        plans[objective] = Plan(
            objective=objective,
            flops_per_token=per_step[objective] / tokens_per_step,
            tokens_per_step=tokens_per_step,
            flops_per_step=per_step[objective],
            steps=steps,
            warmup_steps=warmup,
            snapshot_steps=snapshot_steps,
            snapshot_flops=[s * per_step[objective] for s in snapshot_steps],
            forward_breakdown=flops_breakdown(pretrain.model, seq_len, vocab_size, pretrain.mask_prob, objective),
        )
    return plans


def conclusion(electra: list[float], mlm: list[float], confidence: float, flops: float) -> dict[str, Any]:
    """The paired difference (ELECTRA - MLM) of per-seed GLUE scores at one budget, in one line."""
    diffs = [e - m for e, m in zip(electra, mlm, strict=True)]
    diff, low, high = t_interval(diffs, confidence)
    level = f"{confidence:.0%}"
    if math.isnan(low):
        verdict = "cannot tell: one fine-tuning seed gives no interval (raise compare.seeds)"
    elif low > 0:
        verdict = "ELECTRA is better"
    elif high < 0:
        verdict = "masked LM is better"
    else:
        verdict = "no significant difference"
    interval = "n/a" if math.isnan(low) else f"{100 * low:+.1f} to {100 * high:+.1f}"
    line = (f"At {flops:.3g} training FLOPs: ELECTRA {100 * float(np.mean(electra)):.1f} vs masked LM "
            f"{100 * float(np.mean(mlm)):.1f} GLUE; difference {100 * diff:+.1f} points ({level} CI {interval}, "
            f"{len(diffs)} seeds, paired): {verdict}.")
    return {"difference": diff, "ci": [low, high], "verdict": verdict, "line": line, "seeds": len(diffs)}


def _point_key(snapshot: Path, ft: FinetuneConfig, ev: EvaluateConfig, tasks: list[str]) -> str:
    """What a point's scores depend on: the snapshot's weights and the protocol."""
    return content_key(values={"finetune": ft.model_dump(mode="json", exclude={"output_dir", "model_dir"}),
                               "evaluate": ev.model_dump(mode="json", exclude={"output_dir", "finetune_dir"}),
                               "tasks": tasks},
                       paths={"snapshot": snapshot})


def _score_point(snapshot: Path, point_dir: Path, cfg: CompareConfig, finetune: FinetuneConfig,
                 evaluate: EvaluateConfig, logger: MetricLogger, progress: bool) -> dict[str, dict[str, float]]:
    """Fine-tune one snapshot on every task and seed; the dev main metric per task and seed."""
    from electra.evaluation.evaluate import evaluate_task
    from electra.tasks.finetune import finetune_task
    from electra.core.runtime import resolve_device

    ft = FinetuneConfig.model_validate({
        **finetune.model_dump(), "model_dir": str(snapshot), "output_dir": str(point_dir / "finetune"),
        "tasks": list(cfg.tasks), "seeds": cfg.seeds,
        "max_train_examples": cfg.max_train_examples or finetune.max_train_examples})
    ev = EvaluateConfig.model_validate({
        **evaluate.model_dump(), "finetune_dir": ft.output_dir, "output_dir": str(point_dir / "evaluate"),
        "max_eval_examples": cfg.max_eval_examples or evaluate.max_eval_examples})
    key = _point_key(snapshot, ft, ev, list(cfg.tasks))
    done = point_dir / "scores.json"
    if done.is_file() and read_json(done).get("key") == key:
        return read_json(done)["scores"]
    device = resolve_device(ev.device)
    scores: dict[str, dict[str, float]] = {}
    for task in cfg.tasks:
        finetune_task(ft, task, logger=logger, progress=progress)
        result = evaluate_task(task, ev, ft, device, logger)
        scores[task] = {seed: float(run["main"]) for seed, run in result["seeds"].items()}
        # The scores and dev predictions are what the comparison keeps; the fine-tuned weights
        # (snapshots x tasks x seeds x 2 models: gigabytes at ELECTRA-Small) are not.
        for model_dir in (Path(ft.output_dir) / task).glob("seed-*/model"):
            shutil.rmtree(model_dir)
    write_json(done, {"key": key, "scores": scores})
    return scores


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for objective, color in zip(OBJECTIVES, ("tab:blue", "tab:orange"), strict=True):
        mine = [r for r in rows if r["objective"] == objective]
        x = [r["flops"] for r in mine]
        y = [100 * r["glue"] for r in mine]
        low = [100 * (r["glue"] - r["glue_ci"][0]) if not math.isnan(r["glue_ci"][0]) else 0 for r in mine]
        high = [100 * (r["glue_ci"][1] - r["glue"]) if not math.isnan(r["glue_ci"][1]) else 0 for r in mine]
        label = "ELECTRA (replaced-token detection)" if objective == "electra" else "masked LM"
        ax.errorbar(x, y, yerr=[low, high], marker="o", capsize=3, color=color, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("pretraining FLOPs (analytical, forward + backward)")
    ax.set_ylabel("GLUE dev score (mean of tasks)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=120)
    plt.close(fig)


def _report(rows: list[dict], plans: dict[str, Plan], final: dict, cfg: CompareConfig) -> str:
    level = f"{cfg.confidence:.0%}"
    lines = ["# Replaced-token detection vs masked LM at equal compute", "", f"**{final['line']}**", "",
             f"GLUE dev score (mean of {', '.join(cfg.tasks)}; CoLA MCC, STS-B Spearman, accuracy elsewhere), "
             f"mean over {cfg.seeds} fine-tuning seeds with its {level} Student-t interval, in points. "
             "The intervals cover the fine-tuning seeds only: each objective is pretrained once, so the "
             "variation between pretraining runs is not in them.", "",
             "| objective | fraction | step | training FLOPs | GLUE | " + " | ".join(cfg.tasks) + " |",
             "|---|---|---|---|---|" + "---|" * len(cfg.tasks)]
    for r in rows:
        ci = "" if math.isnan(r["glue_ci"][0]) else f" [{100 * r['glue_ci'][0]:.1f}, {100 * r['glue_ci'][1]:.1f}]"
        tasks = " | ".join(f"{100 * r['tasks'][t]:.1f}" for t in cfg.tasks)
        lines.append(f"| {r['objective']} | {r['fraction']:g} | {r['step']} | {r['flops']:.3g} | "
                     f"{100 * r['glue']:.1f}{ci} | {tasks} |")
    lines += ["", "## Paired difference at each fraction (ELECTRA - masked LM)", "",
              "| fraction | difference | interval | verdict |", "|---|---|---|---|"]
    for fraction, c in final["by_fraction"].items():
        ci = "n/a" if math.isnan(c["ci"][0]) else f"{100 * c['ci'][0]:+.1f} to {100 * c['ci'][1]:+.1f}"
        lines.append(f"| {fraction} | {100 * c['difference']:+.1f} | {ci} | {c['verdict']} |")
    lines += ["", "## Compute", "",
              "Forward FLOPs per token by component (matmuls, 2 per multiply-add); a training step "
              "costs 3x forward (the backward pass twice the forward).", "",
              "| objective | component | forward FLOPs/token |", "|---|---|---|"]
    for plan in plans.values():
        for component, flops in plan.forward_breakdown.items():
            lines.append(f"| {plan.objective} | {component} | {flops:,.0f} |")
    lines += ["", "| objective | training FLOPs/token | tokens/step | FLOPs/step | steps | warm-up | total FLOPs |",
              "|---|---|---|---|---|---|---|"]
    for plan in plans.values():
        lines.append(f"| {plan.objective} | {plan.flops_per_token:,.0f} | {plan.tokens_per_step:,} | "
                     f"{plan.flops_per_step:.3g} | {plan.steps:,} | {plan.warmup_steps:,} | "
                     f"{plan.steps * plan.flops_per_step:.3g} |")
    lines += ["", "![GLUE against training FLOPs](glue_vs_flops.png)", ""]
    return "\n".join(lines)


def compare(cfg: CompareConfig, pretrain: PretrainConfig, finetune: FinetuneConfig, evaluate: EvaluateConfig,
            logger: MetricLogger | None = None, progress: bool = True) -> dict[str, Any]:
    """Pretrain with both objectives under one FLOP budget; fine-tune and evaluate snapshots; report.

    ``logger`` gets one nested run per objective (its pretraining curve) and one per
    snapshot (its scores). Returns the report's paths, the plan and the conclusion.
    """
    from electra.pretraining.trainer import pretrain as run_pretrain

    logger = logger or NullLogger()
    summary = read_json(Path(cfg.input_dir) / "summary.json")
    plans = plan_budget(cfg, pretrain, int(summary["max_seq_length"]), int(summary["vocab_size"]))
    out = Path(cfg.output_dir)
    rows: list[dict[str, Any]] = []
    per_seed: dict[tuple[str, float], dict[str, float]] = {}
    for objective, plan in plans.items():
        run_cfg = PretrainConfig.model_validate({
            **pretrain.model_dump(), "objective": objective, "input_dir": cfg.input_dir,
            "output_dir": str(out / objective / "pretrain"), "max_steps": plan.steps,
            "warmup_steps": plan.warmup_steps, "snapshot_steps": plan.snapshot_steps})
        with logger.child(f"{objective}", {"objective": objective, "role": "pretrain"}) as child:
            run_pretrain(run_cfg, logger=child, progress=progress)
        for fraction, step, flops in zip(cfg.fractions, plan.snapshot_steps, plan.snapshot_flops, strict=True):
            snapshot = out / objective / "pretrain" / "snapshots" / f"step-{step:07d}"
            tags = {"objective": objective, "fraction": f"{fraction:g}", "step": str(step), "role": "snapshot"}
            with logger.child(f"{objective}@{fraction:g}", tags) as child:
                scores = _score_point(snapshot, out / objective / f"step-{step:07d}", cfg, finetune, evaluate,
                                      child, progress)
                seeds = sorted(next(iter(scores.values())))
                glue_by_seed = {s: float(np.mean([scores[t][s] for t in cfg.tasks])) for s in seeds}
                glue, low, high = t_interval(list(glue_by_seed.values()), cfg.confidence)
                row = {"objective": objective, "fraction": fraction, "step": step, "flops": flops,
                       "glue": glue, "glue_ci": [low, high], "glue_by_seed": glue_by_seed,
                       "tasks": {t: float(np.mean(list(scores[t].values()))) for t in cfg.tasks},
                       "task_ci": {t: list(t_interval(list(scores[t].values()), cfg.confidence)[1:])
                                   for t in cfg.tasks}}
                child.log_metrics({"glue": glue, "flops": flops, **{f"glue.{t}": v for t, v in row["tasks"].items()}})
            rows.append(row)
            per_seed[(objective, fraction)] = glue_by_seed

    by_fraction = {}
    for fraction in cfg.fractions:
        electra, mlm = per_seed[("electra", fraction)], per_seed[("mlm", fraction)]
        seeds = sorted(electra)
        budget = fraction * plans["electra"].steps * plans["electra"].flops_per_step
        by_fraction[f"{fraction:g}"] = conclusion([electra[s] for s in seeds], [mlm[s] for s in seeds],
                                                  cfg.confidence, budget)
    final = {**by_fraction[f"{cfg.fractions[-1]:g}"], "by_fraction": by_fraction}
    report_dir = out / "report"
    with atomic_dir(report_dir) as tmp:
        _plot(rows, tmp / "glue_vs_flops.png")
        (tmp / "report.md").write_text(_report(rows, plans, final, cfg), encoding="utf-8")
        write_json(tmp / "results.json", {"plans": {k: asdict(v) for k, v in plans.items()}, "rows": rows,
                                          "conclusion": final})
    logger.log_metrics({f"{r['objective']}.glue.{r['fraction']:g}": r["glue"] for r in rows}
                       | {"difference": final["difference"]})
    logger.log_artifacts(str(report_dir), "compare")
    return {
        "output_dir": str(out),
        "report": str(report_dir / "report.md"),
        "plot": str(report_dir / "glue_vs_flops.png"),
        "conclusion": final["line"],
        "verdict": final["verdict"],
        "difference": final["difference"],
        "steps": {k: v.steps for k, v in plans.items()},
        "budget_flops": plans["electra"].steps * plans["electra"].flops_per_step,
    }
