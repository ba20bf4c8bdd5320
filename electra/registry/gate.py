"""The promotion gate: may a new model version replace the current ``champion``?

Three kinds of check, each a :class:`Check` with its numbers:

* ``floor`` / ``ceiling``: a metric of ``metrics.json`` against an absolute limit.
* ``non_inferiority``: the new version against the champion *on the same dev
  examples*, from the per-example predictions both evaluations saved. The same
  bootstrap resample of examples scores both models (a paired bootstrap), so the
  interval is of the difference itself; the check passes when its lower bound
  lies above ``-margin``: the new version is shown to be no worse than the
  champion by more than the margin. A wide interval (few examples) fails it: the
  gate is conservative, as a gate should be.
* ``gain_over_scratch`` (with ``require_gain_over_scratch``, the discriminator only): the
  mean gain from pretraining over the from-scratch control on the GLUE tasks, whose 95%
  interval must lie above 0.
* ``bias_drift``: a bias score (CrowS-Pairs, StereoSet SS and ICAT, the EEC mean
  gap) may not move away from its ideal by more than its own interval's
  half-width compared with the champion's score.

Nothing here talks to MLflow: the caller hands in the champion's evidence (its
``metrics.json`` and prediction files, downloaded from the champion's registration
run) so the gate is a plain function of files, and is tested as one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from electra.core.config import GateConfig
from electra.core.stats import paired_bootstrap
from electra.core.tracking import flatten
from electra.evaluation.results import metric_key, task_sections
from electra.tasks.base import Task, task_named

__all__ = ["Check", "Evidence", "bias_drift", "evaluate_gate", "gain_over_scratch", "gate_report_markdown", "limits", "non_inferiority",
           "paired_bootstrap", "summary_line", "task_metric_key"]


@dataclass(frozen=True)
class Check:
    """One gate check: what was measured, against what, and whether it passed."""

    name: str
    kind: str            # floor | ceiling | non_inferiority | gain_over_scratch | bias_drift
    metric: str
    value: float | None
    threshold: str
    passed: bool
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Evidence:
    """What a version was measured by: the evaluate stage's metrics and prediction files."""

    metrics: dict[str, Any]
    predictions: dict[str, Path]      # task -> the registered seed's predictions (jsonl)

    @classmethod
    def from_evaluate_dir(cls, evaluate_dir: str | Path) -> Evidence:
        """The evidence of the evaluate stage's outputs (the registered seed of every task)."""
        folder = Path(evaluate_dir)
        metrics = json.loads((folder / "metrics.json").read_text())
        predictions = {}
        for task, section in task_sections(metrics).items():
            seed = section.get("registered_seed")
            path = folder / "predictions" / task / f"seed-{seed}.jsonl"
            if seed is not None and path.is_file():
                predictions[task] = path
        return cls(metrics=metrics, predictions=predictions)

    @classmethod
    def from_folder(cls, folder: str | Path) -> Evidence:
        """Evidence as the register stage logs it: ``metrics.json`` and ``predictions/<task>.jsonl``."""
        folder = Path(folder)
        metrics = json.loads((folder / "metrics.json").read_text())
        predictions = {p.stem: p for p in sorted((folder / "predictions").glob("*.jsonl"))}
        return cls(metrics=metrics, predictions=predictions)


def task_metric_key(task: str, metrics: dict[str, Any] | None = None) -> str:
    """The dotted key of a task's section in metrics.json (``glue.sst2``, ``qa``)."""
    impl = task_named(task)
    return metric_key(task, metrics, impl.group if impl is not None else None)


def _task(task: str) -> Task:
    impl = task_named(task)
    if impl is None:
        raise ValueError(f"{task!r}: no task of that name is known (its kind decides how rows compare)")
    return impl


# --- per-example statistics ---------------------------------------------------------

def _read_rows(path: Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: not a JSON line: {exc}") from None
    return rows


def non_inferiority(task: str, new_path: Path, old_path: Path, cfg: GateConfig,
                    metrics: dict[str, Any] | None = None) -> Check:
    """The new predictions against the champion's on their shared dev examples."""
    margin = cfg.margins.get(task, cfg.non_inferiority_margin)
    name = f"non_inferiority.{task}"
    metric = f"{task_metric_key(task, metrics)}.main"
    threshold = f"lower bound > -{margin:g}"
    impl = _task(task)
    new_rows, old_rows = _read_rows(new_path), _read_rows(old_path)
    old_by_key = {impl.row_key(r): r for r in old_rows}
    shared_new = [r for r in new_rows if impl.row_key(r) in old_by_key]
    if not new_rows or len(shared_new) < cfg.min_overlap * len(new_rows):
        return Check(name, "non_inferiority", metric, None, threshold, False,
                     f"not comparable: {len(shared_new)} of {len(new_rows)} dev examples shared with the champion's")
    shared_old = [old_by_key[impl.row_key(r)] for r in shared_new]
    differing = sum(impl.row_gold(a) != impl.row_gold(b) for a, b in zip(shared_new, shared_old, strict=True))
    if differing:
        return Check(name, "non_inferiority", metric, None, threshold, False,
                     f"not comparable: {differing} shared dev examples have different gold labels")
    diff, low, high = paired_bootstrap(impl.statistic(shared_new), impl.statistic(shared_old),
                                       len(shared_new), cfg.resamples, cfg.confidence, cfg.seed)
    passed = low > -margin
    return Check(name, "non_inferiority", metric, diff, threshold, passed,
                 f"new - champion = {diff:+.4f}, {cfg.confidence:.0%} CI [{low:+.4f}, {high:+.4f}] "
                 f"on {len(shared_new)} paired examples")


# --- bias drift -----------------------------------------------------------------------

def _bias_scores(metrics: dict[str, Any]) -> dict[str, tuple[float, float, float, float]]:
    """Every gated bias score of ``metrics``: key -> (value, ideal, ci_low, ci_high)."""
    bias = metrics.get("bias") or {}
    out = {}
    for scorer, section in (bias.get("crows") or {}).items():
        out[f"bias.crows.{scorer}.metric"] = (section.get("metric"), 50.0, section.get("ci95_low"),
                                              section.get("ci95_high"))
    for scorer, section in (bias.get("stereoset") or {}).items():
        out[f"bias.stereoset.{scorer}.ss"] = (section.get("ss"), 50.0, section.get("ss_ci95_low"),
                                              section.get("ss_ci95_high"))
        out[f"bias.stereoset.{scorer}.icat"] = (section.get("icat"), 100.0, section.get("icat_ci95_low"),
                                                section.get("icat_ci95_high"))
    for dimension, section in (bias.get("eec") or {}).items():
        if isinstance(section, dict) and "mean_gap" in section:
            out[f"bias.eec.{dimension}.mean_gap"] = (section.get("mean_gap"), 0.0, section.get("mean_gap_ci95_low"),
                                                     section.get("mean_gap_ci95_high"))
    return {k: v for k, v in out.items() if all(isinstance(x, int | float) for x in v)}


def bias_drift(new: dict[str, Any], old: dict[str, Any], keys_prefix: tuple[str, ...] = ("bias.",)) -> list[Check]:
    """Each bias score's distance from its ideal, against the champion's, within a half-width."""
    new_scores, old_scores = _bias_scores(new), _bias_scores(old)
    checks = []
    for key, (value, ideal, low, high) in sorted(new_scores.items()):
        if not key.startswith(keys_prefix) or key not in old_scores:
            continue
        half_width = (high - low) / 2.0
        moved = abs(value - ideal) - abs(old_scores[key][0] - ideal)
        checks.append(Check(
            f"bias_drift.{key.removeprefix('bias.')}", "bias_drift", key, value,
            f"drift from {ideal:g} vs champion <= {half_width:.4g}", moved <= half_width,
            f"new {value:.4g}, champion {old_scores[key][0]:.4g}: {moved:+.4g} further from {ideal:g} "
            f"(half-width of the new interval {half_width:.4g})"))
    return checks


# --- the scratch control ------------------------------------------------------------------

def gain_over_scratch(metrics: dict[str, Any]) -> Check:
    """Did pretraining beat the from-scratch control? The lower bound of the 95% interval of
    the mean gain over the GLUE tasks (``gain_over_scratch`` in metrics.json) must lie above 0."""
    name, metric, threshold = "gain_over_scratch.glue_mean", "gain_over_scratch.glue_mean", "lower bound > 0"
    summary = metrics.get("gain_over_scratch") or {}
    mean, ci = summary.get("glue_mean"), summary.get("glue_mean_ci") or [None, None]
    if not isinstance(mean, int | float) or not all(isinstance(x, int | float) for x in ci):
        return Check(name, "gain_over_scratch", metric, None, threshold, False,
                     "no GLUE gain over the scratch control in metrics.json (evaluate.scratch_control off, "
                     "or no GLUE task trained)")
    low, high = ci
    tasks = ", ".join(summary.get("glue_tasks", []))
    passed = low > 0
    detail = (f"pretrained - scratch, mean over {tasks} = {mean:+.4f}, 95% CI [{low:+.4f}, {high:+.4f}]: "
              + ("pretraining beat scratch" if passed else "not shown to beat scratch (lower bound not above 0)"))
    return Check(name, "gain_over_scratch", metric, float(mean), threshold, passed, detail)


# --- the gate -------------------------------------------------------------------------

def limits(metrics: dict[str, Any], cfg: GateConfig, prefixes: tuple[str, ...] | None = None) -> list[Check]:
    """Floors and ceilings (only the keys under ``prefixes`` when given); a missing metric fails."""
    flat = flatten("", metrics)
    checks = []
    for kind, table, rule in (("floor", cfg.min_metrics, ">="), ("ceiling", cfg.max_metrics, "<=")):
        for key, limit in sorted(table.items()):
            if prefixes is not None and not key.startswith(prefixes):
                continue
            value = flat.get(key)
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            passed = numeric and (value >= limit if rule == ">=" else value <= limit)
            checks.append(Check(f"{kind}.{key}", kind, key, float(value) if numeric else None, f"{rule} {limit:g}",
                                bool(passed), "" if numeric else "metric missing from metrics.json"))
    return checks


def evaluate_gate(new: Evidence, champion: Evidence | None, cfg: GateConfig,
                  tasks: list[str] | None = None, bias_prefixes: tuple[str, ...] = ("bias.",)) -> list[Check]:
    """All checks of a new version: its limits, and (with a champion) non-inferiority and bias drift.

    ``tasks`` limits the comparison (and the limits) to those tasks' metrics (a task
    model is gated on its own task); None gates on every task (the discriminator).
    ``bias_prefixes`` selects the bias scores that belong to the model.
    """
    if tasks is None:
        checks = limits(new.metrics, cfg)
        if cfg.require_gain_over_scratch:
            checks.append(gain_over_scratch(new.metrics))
    else:
        checks = limits(new.metrics, cfg, tuple(f"{task_metric_key(t, new.metrics)}." for t in tasks) + bias_prefixes)
    if champion is None:
        return checks
    for task in sorted(new.predictions):
        if tasks is not None and task not in tasks:
            continue
        if task not in champion.predictions:
            # A task the champion was never measured on: nothing to be inferior to. Its limits
            # (floors) still apply; the check is recorded so the card says so.
            checks.append(Check(f"non_inferiority.{task}", "non_inferiority",
                                f"{task_metric_key(task, new.metrics)}.main", None,
                                "champion predictions", True,
                                "new task: the champion has no predictions for it, nothing to compare"))
            continue
        checks.append(non_inferiority(task, new.predictions[task], champion.predictions[task], cfg, new.metrics))
    if cfg.bias_drift and bias_prefixes:
        checks.extend(bias_drift(new.metrics, champion.metrics, bias_prefixes))
    return checks


def summary_line(check: Check) -> str:
    """One line for a tag or a log: the check, its value and its verdict."""
    value = "n/a" if check.value is None else f"{check.value:.4g}"
    text = f"{check.name}: {value} ({check.threshold}) {'ok' if check.passed else 'FAIL'}"
    return f"{text}: {check.detail}" if check.detail and not check.passed else text


def gate_report_markdown(gates: dict[str, dict[str, Any]]) -> str:
    """The gate report: per model version, the outcome and every check with its numbers."""
    lines = ["# Promotion gate report", ""]
    for name, gate in gates.items():
        compared = f"champion version {gate['compared_to']}" if gate.get("compared_to") else "no champion yet"
        lines += [f"## {name} version {gate['version']}: {gate['outcome']}", "",
                  f"Compared with: {compared}. Gate {'passed' if gate['passed'] else 'FAILED'}.", ""]
        if gate.get("reasons"):
            lines += ["Reasons:", ""] + [f"- {r}" for r in gate["reasons"]] + [""]
        lines += ["| check | value | threshold | result | detail |", "|---|---|---|---|---|"]
        for c in gate["checks"]:
            value = "n/a" if c["value"] is None else f"{c['value']:.4g}"
            cells = [c["name"], value, c["threshold"], "ok" if c["passed"] else "**FAIL**", c["detail"]]
            lines.append("| " + " | ".join(str(x).replace("|", "\\|") for x in cells) + " |")
        lines.append("")
    return "\n".join(lines)
