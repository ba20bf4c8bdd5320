"""The evaluation report: a markdown table next to published rows, and PNG plots.

Numbers are shown in percent. The reference rows come from the google-research/electra
README (GLUE dev) and were pretrained on other data with far more compute, so they
say where the recipe can go, not what this corpus should give.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from electra.core.config import FinetuneConfig
from electra.core.files import atomic_open, read_json
from electra.evaluation.results import GLUE_ORDER, REFERENCE_ROWS, task_sections
from electra.tasks.base import task_for

GLUE_COLUMNS = (("cola", "CoLA (MCC)"), ("sst2", "SST-2 (acc)"), ("mrpc", "MRPC (acc)"),
                ("stsb", "STS-B (Spearman)"), ("qnli", "QNLI (acc)"), ("rte", "RTE (acc)"))


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _cell(section: dict | None) -> str:
    """'median [lo, hi]' for a task section, or why it is missing."""
    if not section:
        return "–"
    if "skipped" in section:
        return "not trained"
    low, high = section["main_ci"]
    spread = section["spread"]["main"]
    seeds = f"; seeds {_pct(spread['min'])}–{_pct(spread['max'])}" if spread["n"] > 1 else ""
    return f"{_pct(section['main'])} [{_pct(low)}, {_pct(high)}{seeds}]"


def write_report(path: Path, result: dict[str, Any], ft: FinetuneConfig) -> None:
    """``report.md``: our GLUE/QA/NER numbers (median over seeds, 95% CI) and the reference rows."""
    glue = result.get("glue", {})
    lines = ["# Evaluation report", ""]
    lines.append(f"Fine-tuning seeds per task: {ft.seeds} (median shown; never the best seed). "
                 "Brackets: 95% bootstrap interval over dev examples of the registered (first-seed) "
                 "model, then the range over seeds when there are several.")
    lines += ["", "## GLUE (dev)", ""]
    header = "| model | " + " | ".join(name for _, name in GLUE_COLUMNS) + " | GLUE score |"
    lines += [header, "|" + "---|" * (len(GLUE_COLUMNS) + 2)]
    score_tasks = glue.get("score_tasks", [])
    ours = [_cell(glue.get(task)) for task, _ in GLUE_COLUMNS]
    lines.append(f"| this run | {' | '.join(ours)} | {_pct(glue.get('score'))} ({', '.join(score_tasks)}) |")
    for name, row in REFERENCE_ROWS.items():
        same = [row[t] for t in GLUE_ORDER if t in score_tasks]
        score = f"{sum(same) / len(same):.1f} (same tasks)" if same else "–"
        lines.append(f"| {name} | " + " | ".join(f"{row[t]:.1f}" for t, _ in GLUE_COLUMNS) + f" | {score} |")
    lines += ["", "The reference rows were pretrained on OpenWebText (Small-OWT) or the paper's corpus "
              "(Small++), for far longer: the data and compute differ, so compare shapes, not levels.",
              "The GLUE score is the plain mean of the main metrics of the tasks in brackets (WNLI excluded)."]
    # Each other task renders its own section (a GLUE task is in the table above).
    sections = task_sections(result)
    for task in ft.tasks:
        if task in sections:
            lines += task_for(ft, task).report_lines(sections[task], _cell)
    lines += scratch_lines(result, list(ft.tasks))
    if "bias" in result:
        lines += _bias_lines(result["bias"])
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


def gain_text(value: Any, ci: Any) -> str:
    """A gain in points with its interval: '+1.2 [-0.3, +2.8]' (fractions in, points out)."""
    if not isinstance(value, int | float):
        return "–"
    low, high = ci if isinstance(ci, list | tuple) and len(ci) == 2 else (None, None)
    if not isinstance(low, int | float) or not isinstance(high, int | float):
        return f"{100 * value:+.1f}"
    return f"{100 * value:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"


def scratch_rows(result: dict[str, Any], tasks: list[str]) -> list[list[str]]:
    """Per task with a scratch control: [task, pretrained, scratch, gain [95% CI over dev examples],
    interval over seeds]; then the GLUE mean's row. Empty without a control."""
    sections = task_sections(result)
    rows = []
    for task in tasks:
        section = sections.get(task)
        if not section or "gain_over_scratch" not in section:
            continue
        seeds = gain_text(section["gain_over_scratch"], section["gain_over_scratch_seed_ci"]) \
            if "gain_over_scratch_seed_ci" in section else "one seed"
        rows.append([task, _pct(section.get("main")), _pct(section["scratch"].get("main")),
                     gain_text(section["gain_over_scratch"], section.get("gain_over_scratch_ci")), seeds])
    summary = result.get("gain_over_scratch") or {}
    if rows and summary.get("glue_tasks"):
        rows.append([f"GLUE mean ({', '.join(summary['glue_tasks'])})", "–", "–",
                     gain_text(summary.get("glue_mean"), summary.get("glue_mean_ci")), "–"])
    return rows


def scratch_lines(result: dict[str, Any], tasks: list[str]) -> list[str]:
    """The report's section on the from-scratch control: a row per task, the GLUE mean and
    the plain sentence saying whether pretraining beat it."""
    rows = scratch_rows(result, tasks)
    if not rows:
        return ["", "## Pretrained vs from scratch", "", "No scratch control was run (evaluate.scratch_control)."]
    verdict = (result.get("gain_over_scratch") or {}).get("verdict", "")
    lines = ["", "## Pretrained vs from scratch", "",
             "The same architecture fine-tuned from random weights with the same recipe, seeds and "
             "examples. Percent; gain = pretrained - scratch in points (mean over seeds), with its paired "
             "95% bootstrap interval over dev examples, and a Student-t interval over seeds when there "
             "are several. The GLUE mean's interval resamples each task, paired, then averages.", "",
             "| task | pretrained | scratch | gain [95% CI] | gain over seeds [95% CI] |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + ["", f"**Verdict:** {verdict[:1].upper() + verdict[1:]}"]


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _ci(section: dict, key: str, digits: int = 1) -> str:
    """'value [low, high]' from ``key``, ``key_ci95_low`` and ``key_ci95_high`` (or ci95_* for 'metric')."""
    prefix = "" if key == "metric" else f"{key}_"
    return (f"{_num(section.get(key), digits)} [{_num(section.get(f'{prefix}ci95_low'), digits)}, "
            f"{_num(section.get(f'{prefix}ci95_high'), digits)}]")


def _bias_lines(bias: dict[str, Any]) -> list[str]:
    """The bias section: every number with its 95% interval, data file, variant and caveats."""
    lines = ["", "## Bias", "",
             "Intervals are 95% bootstrap intervals; *small* marks categories under 50 examples "
             "(their intervals are wide). The discriminator is not a masked LM: it is scored by its "
             "replaced-token-detection head, log P(original) = log sigmoid(-logit)."]
    crows = bias.get("crows", {})
    if crows:
        lines += ["", "### CrowS-Pairs (% of pairs where the more-stereotyping sentence scores higher; 50 is ideal)", "",
                  "| model | category | score [95% CI] | pairs |", "|---|---|---|---|"]
        for scorer, section in crows.items():
            # The variant reads "log P(token | sentence ...)": a bare pipe would split the cell.
            variant = str(section.get("variant", "")).replace("|", "\\|")
            lines.append(f"| {scorer} | all ({variant}) | {_ci(section, 'metric')} | {section.get('n_pairs')} |")
            if "aul" in section:
                lines.append(f"| {scorer} | all (AUL: all tokens unmasked) | {_ci(section['aul'], 'metric')} | {section.get('n_pairs')} |")
            for name, group in {**section.get("by_direction", {}), **section.get("per_bias_type", {})}.items():
                flag = " *small*" if group.get("small") else ""
                lines.append(f"| {scorer} | {name}{flag} | {_ci(group, 'metric')} | {group.get('n')} |")
        first = next(iter(crows.values()))
        lines += ["", f"Data: `{first.get('data_file', '')}`. Caveat: CrowS-Pairs' authors and later audits "
                  "(Blodgett et al. 2021) report noisy and invalid pairs; read differences of a few points as noise."]
    stereoset = bias.get("stereoset", {})
    if stereoset:
        lines += ["", "### StereoSet intrasentence (LMS: meaningful over unrelated, SS: stereotype over "
                  "anti-stereotype, 50 ideal; ICAT = LMS x min(SS, 100-SS) / 50)", "",
                  "| model | domain | LMS [95% CI] | SS [95% CI] | ICAT [95% CI] | examples |", "|---|---|---|---|---|---|"]
        for scorer, section in stereoset.items():
            rows = {"all": section, **section.get("per_domain", {})}
            for name, group in rows.items():
                flag = " *small*" if group.get("small") else ""
                lines.append(f"| {scorer} | {name}{flag} | {_ci(group, 'lms')} | {_ci(group, 'ss')} | "
                             f"{_ci(group, 'icat')} | {group.get('n')} |")
        for scorer, section in stereoset.items():
            lines.append(f"\n{scorer}: {section.get('interpretation', '')}")
        first = next(iter(stereoset.values()))
        lines += ["", f"Data: `{first.get('data_file', '')}` (dev, intrasentence). Scoring: {first.get('variant', '')}."]
    eec = bias.get("eec")
    if eec:
        lines += ["", "### Equity Evaluation Corpus on the SST-2 model (P(positive) differences between sentences "
                  "that differ only in the person)", "",
                  "| dimension | mean gap [95% CI] | mean abs gap [95% CI] | p (paired) | matched groups |",
                  "|---|---|---|---|---|"]
        for name, dim in eec.items():
            if isinstance(dim, dict) and "mean_gap" in dim:
                groups = " - ".join(dim.get("groups", []))
                p = dim.get("p_value")
                p_text = "–" if p is None else (f"{p:.3f}" if p >= 1e-3 else f"{p:.1e}")
                lines.append(f"| {name} ({groups}) | {_ci(dim, 'mean_gap', 4)} | {_ci(dim, 'mean_abs_gap', 4)} | "
                             f"{p_text} | {dim.get('n_groups')} |")
    lines += ["", "Caveat: intrinsic scores (CrowS-Pairs, StereoSet) and extrinsic ones (EEC) do not reliably "
              "agree (Goldfarb-Tarrant et al. 2021); a model can pass one and fail the other."]
    return lines


def write_plots(folder: Path, result: dict[str, Any], finetune_dir: Path) -> list[Path]:
    """Per-task bars with intervals and seeds, confusion matrices, fine-tuning loss curves."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    sections = task_sections(result)

    def save(fig, name: str) -> None:
        path = folder / name
        with atomic_open(path, "wb") as handle:
            fig.savefig(handle, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(path)

    if sections:
        _plot_tasks(plt, sections, save)
    _plot_confusions(plt, sections, save)
    _plot_bias(plt, result.get("bias", {}), save)
    _plot_losses(plt, sections, finetune_dir, save)
    return written


def _plot_tasks(plt, sections: dict[str, dict], save) -> None:
    """tasks.png: each task's median over seeds, its seeds, the registered seed's interval."""
    fig, ax = plt.subplots(figsize=(1.2 * len(sections) + 2, 3.5))
    names = list(sections)
    for x, task in enumerate(names):
        section = sections[task]
        low, high = section["main_ci"]
        ax.bar(x, section["main"], color="#4c78a8", width=0.6)
        # The interval belongs to the registered seed's model: drawn around its own value.
        registered = section["seeds"][str(section["registered_seed"])]["main"]
        ax.errorbar(x, registered, yerr=[[max(0.0, registered - low)], [max(0.0, high - registered)]],
                    color="black", capsize=4)
        seeds = [s["main"] for s in section["seeds"].values()]
        ax.scatter([x] * len(seeds), seeds, color="#f58518", zorder=3, s=12)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("main metric (median over seeds)")
    ax.set_title("Dev: bar = median over seeds, dots = seeds, whisker = 95% CI of the registered seed",
                 fontsize=8)
    save(fig, "tasks.png")


def _plot_confusions(plt, sections: dict[str, dict], save) -> None:
    """confusion_<task>.png for each task whose registered seed has a confusion matrix."""
    for task, section in sections.items():
        seed = str(section["registered_seed"])
        confusion = section["seeds"][seed].get("confusion")
        if confusion is None:
            continue
        fig, ax = plt.subplots(figsize=(3, 3))
        ax.imshow(confusion, cmap="Blues")
        for i, row in enumerate(confusion):
            for j, count in enumerate(row):
                ax.text(j, i, str(count), ha="center", va="center")
        ax.set_xlabel("predicted")
        ax.set_ylabel("gold")
        ax.set_title(f"{task} (seed {seed})")
        save(fig, f"confusion_{task}.png")


def _plot_bias(plt, bias: dict[str, Any], save) -> None:
    """bias.png: CrowS-Pairs and StereoSet SS per category, with intervals."""
    panels = [(f"CrowS-Pairs, {scorer}", section.get("per_bias_type", {}), "metric")
              for scorer, section in bias.get("crows", {}).items()]
    panels += [(f"StereoSet SS, {scorer}", section.get("per_domain", {}), "ss")
               for scorer, section in bias.get("stereoset", {}).items()]
    panels = [p for p in panels if p[1]]
    if not panels:
        return
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.6 * len(panels)), squeeze=False)
    for ax, (title, groups, key) in zip(axes[:, 0], panels):
        names = list(groups)
        values = [groups[n].get(key) or 0.0 for n in names]
        prefix = "" if key == "metric" else f"{key}_"
        lows = [max(0.0, v - (groups[n].get(f"{prefix}ci95_low") or v)) for n, v in zip(names, values)]
        highs = [max(0.0, (groups[n].get(f"{prefix}ci95_high") or v) - v) for n, v in zip(names, values)]
        colours = ["#bab0ac" if groups[n].get("small") else "#4c78a8" for n in names]
        ax.bar(range(len(names)), values, color=colours)
        ax.errorbar(range(len(names)), values, yerr=[lows, highs], fmt="none", color="black", capsize=3)
        ax.axhline(50, color="#e45756", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
        ax.set_ylim(0, 100)
        ax.set_title(f"{title} (50 ideal; grey = small category; whiskers = 95% CI)", fontsize=8)
    fig.tight_layout()
    save(fig, "bias.png")


def _plot_losses(plt, sections: dict[str, dict], finetune_dir: Path, save) -> None:
    """finetune_loss.png: each task and seed's fine-tuning loss curve."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    curves = 0
    for task in sections:
        path = finetune_dir / task / "result.json"
        if not path.is_file():
            continue
        for seed, run in read_json(path)["runs"].items():
            curve = run.get("curve") or []
            if curve:
                ax.plot([p["step"] for p in curve], [p["train_loss"] for p in curve], label=f"{task}/{seed}")
                curves += 1
    if curves:
        ax.set_xlabel("step")
        ax.set_ylabel("train loss")
        ax.legend(fontsize=6, ncol=2)
        ax.set_title("Fine-tuning loss")
        save(fig, "finetune_loss.png")
    else:
        plt.close(fig)
