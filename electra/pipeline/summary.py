"""What the doors print: one line per stage, and the pipeline's summary table.

A stage's full result stays a JSON document (``--json``, ``run.json`` beside its outputs,
the MLflow run); a person gets one line saying what it did, how long it took and where
its outputs are, and at the end a table of the headline numbers read back from the
outputs themselves (so ``electra summary`` shows the same after any door ran them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from electra.core.config import Params
from electra.core.files import read_json
from electra.evaluation.report import _cell, _ci, _pct, gain_text, scratch_rows
from electra.evaluation.results import all_sections
from electra.tasks.base import task_named


def _n(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def _what(stage: str, result: dict[str, Any]) -> str:
    """The few numbers that say what a stage did (its result's own keys)."""
    r = result
    if stage == "ingest":
        skipped = r.get("files_skipped", 0)
        return (f"{_n(r.get('files_kept'))} files -> {_n(r.get('documents'))} documents, "
                f"{_n(r.get('sentences'))} sentences" + (f" ({skipped} skipped: see manifest.json)" if skipped else ""))
    if stage == "tokenize":
        tokens = r.get("train_tokens")
        tok = f", {tokens / 1e6:.2f}M train tokens" if isinstance(tokens, int | float) else ""
        return f"{_n(r.get('train_examples'))} train / {_n(r.get('validation_examples'))} validation examples{tok}"
    if stage == "pretrain":
        final = r.get("final", {})
        train, valid = final.get("train", {}), final.get("validation", {})
        parts = [f"{_n(r.get('steps'))} steps ({r.get('objective', 'electra')}, {r.get('precision', '')} on {r.get('device', '')})"]
        if "loss" in train:
            parts.append(f"train loss {train['loss']:.3f}")
        if "discriminator_loss" in valid:
            parts.append(f"validation discriminator loss {valid['discriminator_loss']:.3f}")
        if isinstance(final.get("tokens_per_s"), int | float):
            parts.append(f"{final['tokens_per_s']:,.0f} tokens/s")
        return ", ".join(parts)
    if stage == "finetune":
        if "runs" in r:   # one task
            return f"{len(r['runs'])} seed(s), train loss {r.get('train_loss', float('nan')):.3f}"
        if isinstance(r.get("skipped"), str):   # one task without a train split
            return f"not trained: {r['skipped']}"
        tasks, skipped = r.get("tasks") or {}, r.get("skipped") or {}
        return f"{len(tasks)} task(s) trained ({', '.join(tasks)})" + (
            f", not trained: {', '.join(skipped)}" if skipped else "")
    if stage == "evaluate":
        if "main" in r:
            over = (f"; gain over scratch {gain_text(r['gain_over_scratch'], r.get('gain_over_scratch_ci'))} points"
                    if "gain_over_scratch" in r else "")
            return f"main metric {_cell(r)}{over}"
        glue = r.get("glue", {})
        gain = r.get("gain_over_scratch") or {}
        over = (f"; gain over scratch {gain_text(gain['glue_mean'], gain.get('glue_mean_ci'))} points"
                if isinstance(gain.get("glue_mean"), int | float) else "")
        if isinstance(glue.get("score"), int | float):
            return f"GLUE score {_pct(glue['score'])} over {', '.join(glue.get('score_tasks', []))}{over}"
        return "done"
    if stage == "register":
        outcomes = r.get("outcomes", {})
        versions = r.get("versions", {})
        return ", ".join(f"{name} v{versions.get(name)} {outcome}" for name, outcome in outcomes.items()) or "done"
    return "done"


def stage_line(stage: str, result: dict[str, Any], task: str | None = None) -> str:
    """``<stage>: <what it did> in <seconds>s -> <outputs>`` (or that it was skipped as current)."""
    name = stage if task is None else f"{stage}@{task}"
    where = result.get("output_dir") or result.get("model_dir") or ""
    if result.get("up_to_date"):
        return f"{name}: up to date (inputs, params and code unchanged), skipped -> {where}".rstrip(" ->")
    try:
        what = _what(stage, result)
    except (TypeError, ValueError, KeyError, AttributeError):  # a result of an unexpected shape: say less
        what = "done"
    seconds = result.get("seconds")
    took = f" in {seconds:.1f}s" if isinstance(seconds, int | float) else ""
    return f"{name}: {what}{took}" + (f" -> {where}" if where else "")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    def line(cells: list[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _bias_rows(bias: dict[str, Any]) -> list[list[str]]:
    rows = []
    for scorer, section in bias.get("crows", {}).items():
        rows.append([f"CrowS-Pairs ({scorer})", _ci(section, "metric"), "50 is ideal"])
    for scorer, section in bias.get("stereoset", {}).items():
        rows.append([f"StereoSet SS ({scorer})", _ci(section, "ss"), "50 is ideal"])
    for name, dim in (bias.get("eec") or {}).items():
        if isinstance(dim, dict) and "mean_gap" in dim:
            rows.append([f"EEC {name} gap (SST-2 model)", _ci(dim, "mean_gap", 4), "0 is ideal"])
    return rows


def summary_text(params: Params, ui_hint: bool = True) -> str:
    """The headline results of the pipeline's outputs, as a person reads them in a terminal."""
    lines: list[str] = ["", "Summary"]
    metrics_file = Path(params.evaluate.output_dir) / "metrics.json"
    if metrics_file.is_file():
        metrics = read_json(metrics_file)
        rows = []
        # Every task's section, wherever metrics.json groups it (GLUE's tasks, QA, NER, ...).
        for task, section in all_sections(metrics).items():
            known = task_named(task, params.finetune)
            name = f"{task} {known.card_info().main}" if known is not None else task
            rows.append([name, _cell(section), str(section.get("dev_examples", ""))])
        glue = metrics.get("glue", {})
        if isinstance(glue.get("score"), int | float):
            rows.append(["GLUE score", _pct(glue["score"]), f"mean over {', '.join(glue.get('score_tasks', []))}"])
        lines += ["", "Benchmarks (dev; % median over seeds [95% bootstrap interval of the registered model])"]
        lines += ["  " + r for r in _table(["task", "main metric", "dev examples"], rows)]
        gain_rows = scratch_rows(metrics, list(all_sections(metrics)))
        if gain_rows:
            lines += ["", "Pretrained vs from scratch (%; gain in points [paired 95% interval over dev examples])"]
            lines += ["  " + r for r in _table(["task", "pretrained", "scratch", "gain", "over seeds"], gain_rows)]
            lines.append("  " + str((metrics.get("gain_over_scratch") or {}).get("verdict", "")))
        bias_rows = _bias_rows(metrics.get("bias") or {})
        if bias_rows:
            lines += ["", "Bias (score [95% interval])"]
            lines += ["  " + r for r in _table(["benchmark", "score", ""], bias_rows)]
    else:
        lines.append(f"  no evaluation yet ({metrics_file} missing)")
    registration = Path(params.register.output_dir) / "registration.json"
    if registration.is_file():
        reg = read_json(registration)
        rows = []
        for name, version in reg.get("versions", {}).items():
            gate = reg.get("gates", {}).get(name, {})
            rows.append([name, f"v{version}", ", ".join(reg.get("aliases", {}).get(name, [])) or "-",
                         str(gate.get("outcome", ""))])
        lines += ["", f"Registered in {reg.get('tracking_uri', 'MLflow')}"]
        lines += ["  " + r for r in _table(["model", "version", "aliases", "gate"], rows)]
    else:
        lines += ["", f"Nothing registered yet ({registration} missing)"]
    if ui_hint:
        server = reg.get("tracking_uri", "") if registration.is_file() else ""
        where = (f"{server.rstrip('/')}/#/models" if server.startswith("http")
                 else "make mlflow-ui, then http://127.0.0.1:5000/#/models")
        lines += ["", f"Open the registry: {where}",
                  f"Full report: {Path(params.evaluate.output_dir) / 'report' / 'report.md'}"]
    return "\n".join(lines)
