"""``MODEL_CARD.md`` for one registered model version: a pure text renderer.

:func:`render_model_card` turns what the register stage already holds (the
evaluate stage's ``metrics.json``, the gate's decision, the lineage tags, the
resolved params, the text of ``data/LICENSES.md`` and the datasets logged with
the run) into a Hugging Face style model card. It reads no files and talks to
no tracker: the caller passes everything in and writes the string where it
wants (an MLflow artifact, a Hub README).

The card has YAML front matter (``language``, ``library_name``, ``tags``,
``license: other``, ``datasets`` and the ``model-index`` results block of
https://huggingface.co/docs/hub/model-cards, values in percent) and these
sections, each drawn from one argument:

======================  ======================================================
section                 drawn from
======================  ======================================================
intended use            ``kind``/``task``, the profile, flagged licences
training data           ``params`` (corpus, files), ``datasets``, ``licenses_md``
training recipe         ``params`` (pretrain.model, pretrain, finetune)
benchmark results       ``metrics`` (each task) and ``results.REFERENCE_ROWS``
bias                    ``metrics["bias"]`` through ``report._bias_lines``
promotion gate          ``gate``
lineage                 ``lineage``
======================  ======================================================

A discriminator card reports every task and every bias benchmark; a task
card only its own task, EEC for SST-2 (the only benchmark that scores a
fine-tuned model) and a pointer to the discriminator's card. Missing pieces
(no bias section, a skipped task, ``None`` values, empty params) render as a
sentence saying so, never as an exception.
"""


from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from electra.evaluation.report import _bias_lines, _cell, _pct
from electra.evaluation.results import EEC_TASK, GLUE_ORDER, REFERENCE_ROWS, section_of
from electra.registry.card_parts import (
    METRIC_NAMES,
    _card_datasets,
    _card_tasks,
    _fmt,
    _from_line,
    _md,
    _number,
    _recipe,
    _scratch,
    _section,
    _table,
    _task_info,
    _training_data,
)
from electra.tasks.base import kinds, task_named

# _bias_lines, _cell and _pct are report.py's private renderers, imported on purpose:
# the card shows the same numbers, the same way, as the evaluation report.

# Profiles that exist to show the pipeline runs, not to produce a usable model.
# Profiles sized for a CPU: their models demonstrate the pipeline (and, for laptop, measure
# what a CPU budget learns); none is a usable encoder, and the card says so.
DEMO_PROFILES = ("tiny", "micro", "laptop")

def _model_index(model_name: str, tasks: list[str], metrics: Mapping[str, Any],
                 params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``model-index`` block: one result per evaluated task, every metric in percent.

    Values are the medians over fine-tuning seeds (the numbers of metrics.json), as the
    evaluation report shows them; skipped tasks and missing values are left out, since
    the Hub wants a number in every ``value``.
    """
    results = []
    for task in tasks:
        section = section_of(metrics, task)
        if not section or "skipped" in section:
            continue
        info = _task_info(task, params)
        entries = []
        for key in info["metrics"]:
            value = _number(section.get(key))
            if value is None:
                continue
            hf_id, name = METRIC_NAMES.get(key, (key, key))
            entries.append({"type": hf_id, "value": round(100 * value, 2), "name": f"{name} (dev, %)"})
        if entries:
            hf_type, hf_name = info["hf_task"]
            results.append({"task": {"type": hf_type, "name": hf_name}, "dataset": dict(info["dataset"]),
                            "metrics": entries})
    return [{"name": model_name, "results": results}]


# --------------------------------------------------------------------------- sections


def _front_matter(model_name: str, kind: str, task: str | None, tasks: list[str], metrics: Mapping[str, Any],
                  params: Mapping[str, Any], datasets: list[dict], profile: str | None) -> str:
    """YAML front matter (Hugging Face model card metadata), dumped by yaml so it always parses."""
    tags = ["electra", "pytorch"]
    tags += ["replaced-token-detection", "fill-mask"] if kind == "discriminator" else [
        _task_info(task or kind, params)["hf_task"][0]]
    if task and task != kind:
        tags.append(task)
    if profile:
        tags.append(f"profile-{profile}")
    tags.append("research-only")
    # what the weights were trained on: the discriminator saw only the pretraining corpus
    contexts = ("pretraining",) if kind == "discriminator" else ("pretraining", "finetuning")
    trained_on = [str(d.get("name")) for d in datasets if d.get("context") in contexts and d.get("name")]
    if not trained_on:  # no dataset logged: name the benchmarks by their Hub ids
        trained_on = [_task_info(t, params)["dataset"]["type"] for t in tasks]
    meta: dict[str, Any] = {
        "language": "en",
        "library_name": "transformers",
        "tags": tags,
        "license": "other",
        "license_name": "mixed-dataset-terms",
        "license_link": str(_section(params, "register").get("licenses_file") or "data/LICENSES.md"),
        "datasets": list(dict.fromkeys(trained_on)),
    }
    if kind != "discriminator":
        meta["pipeline_tag"] = _task_info(task or kind, params)["hf_task"][0]
    meta["model-index"] = _model_index(model_name, tasks, metrics, params)
    body = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    note = ("# license: other: the weights inherit the terms of their training data; several datasets\n"
            "# are research-use only (see the Licences section and license_link).\n")
    return "---\n" + note + body + "---\n"


def _intended_use(kind: str, task: str | None, profile: str | None,
                  flagged: list[str], params: Mapping[str, Any]) -> list[str]:
    lines = ["", "## Intended use", ""]
    if kind == "discriminator":
        lines.append("A small English text encoder: the discriminator of an ELECTRA pretraining run "
                     "(replaced-token detection). Use it as the starting point for fine-tuning on "
                     "English classification, span extraction or tagging tasks, or to score which "
                     "tokens of a text look replaced. It is a research artefact of this pipeline.")
    else:
        use = _task_info(task or kind, params)["use"]
        disc = _section(params, "register").get("model_name") or "the pretrained discriminator"
        lines.append(f"A fine-tuned ELECTRA model for {use}, trained from `{disc}`. "
                     "It is a research artefact of this pipeline: use it to study the task, the "
                     "recipe or the pipeline, on inputs like its training data.")
    lines += ["", "## Out-of-scope use", ""]
    out = ["Text generation: the discriminator is not a generative language model."
           if kind == "discriminator" else
           "Tasks other than the one it was fine-tuned for, and text unlike its training data.",
           "Languages other than English, and inputs longer than the training sequence length "
           "(they are truncated).",
           "Any decision about people (hiring, moderation, credit, ...): see the bias section; "
           "the bias benchmarks measure some gaps, they do not certify their absence.",
           "Commercial use or redistribution without checking the data licences"
           + (f": {', '.join(flagged)} are flagged as not openly licensed (research use only)."
              if flagged else " (see Training data).")]
    if profile in DEMO_PROFILES:
        out.insert(0, f"**Anything but testing the pipeline.** This version comes from the `{profile}` "
                      "profile, sized to run every stage end to end on a CPU in minutes "
                      "(a tiny encoder, a few hundred pretraining steps). Its scores are far below a "
                      "usable encoder's, at or near chance on several tasks: it is not a usable model.")
    lines += [f"- {item}" for item in out]
    return lines


def _result_cell(section: dict[str, Any] | None) -> str:
    """The report's 'median [lo, hi; seeds min–max]' cell; a plain median when the section
    lacks the interval or spread (hand-made or partial metrics)."""
    if not section:
        return "not evaluated"
    if "skipped" in section:
        return "not trained"
    try:
        return _cell(section)
    except (KeyError, TypeError, ValueError, IndexError):
        return _pct(_number(section.get("main")))


def _benchmarks(kind: str, tasks: list[str], metrics: Mapping[str, Any], params: Mapping[str, Any],
                profile: str | None) -> list[str]:
    lines = ["", "## Benchmark results (dev sets)", ""]
    if not tasks:
        return lines + ["No task was fine-tuned or evaluated for this version."]
    lines.append("Percent. *This model*: median over fine-tuning seeds, then in brackets the 95% bootstrap "
                 "interval over dev examples of the registered (first-seed) model and the range over seeds "
                 "when there are several. The registered model's own score is in its own column.")
    refs = {name.split(" (")[0]: row for name, row in REFERENCE_ROWS.items()}
    rows, notes = [], []
    for task in tasks:
        section = section_of(metrics, task)
        info = _task_info(task, params)
        main = info["main"]
        registered, n_seeds, dev, other = "–", "–", "–", []
        if section and "skipped" in section:
            notes.append(f"- {info['title']}: not trained ({section['skipped']}).")
        elif section:
            seed = section.get("registered_seed")
            per_seed = (section.get("seeds") or {}).get(str(seed)) if isinstance(section.get("seeds"), dict) else None
            if isinstance(per_seed, dict):
                registered = f"{_pct(_number(per_seed.get('main')))} (seed {seed})"
            spread = (section.get("spread") or {}).get("main") if isinstance(section.get("spread"), dict) else None
            n_seeds = str(spread.get("n", "–")) if isinstance(spread, dict) else "–"
            dev = str(section.get("dev_examples", "–"))
            for key in info["metrics"]:
                if key != main and _number(section.get(key)) is not None:
                    other.append(f"{METRIC_NAMES.get(key, (key, key))[1]} {_pct(section[key])}")
            if section.get("dev"):
                notes.append(f"- {info['title']} dev set: {section['dev']}.")
        else:
            notes.append(f"- {info['title']}: no result in metrics.json.")
        ref_cells = [f"{row[task]:.1f}" if task in row else "–" for row in refs.values()]
        rows.append([info["title"], METRIC_NAMES.get(main, (main, main))[1], _result_cell(section), registered,
                     n_seeds, "; ".join(other) or "–", dev, *ref_cells])
    if kind == "discriminator":
        glue = metrics.get("glue") if isinstance(metrics.get("glue"), dict) else {}
        score_tasks = [t for t in glue.get("score_tasks") or [] if isinstance(t, str)]
        ref_scores = []
        for row in refs.values():
            same = [row[t] for t in GLUE_ORDER if t in score_tasks and t in row]
            ref_scores.append(f"{sum(same) / len(same):.1f}" if same else "–")
        rows.append([f"GLUE score ({', '.join(score_tasks) or 'no task'})", "mean of main metrics",
                     _pct(_number(glue.get("score"))), "–", "–", "–", "–", *ref_scores])
    lines += [""] + _table(["task", "main metric", "this model", "registered model", "seeds", "other metrics",
                            "dev examples", *refs], rows)
    lines += ["", "Reference columns: GLUE dev results published in the google-research/electra README "
              "(\"Expected results\"). They were pretrained on other data (OpenWebText, or the "
              "paper's corpus) with far more compute: the data and compute differ, so compare shapes, not "
              "levels. No reference is given for QA and NER (other datasets)."]
    if notes:
        lines += ["", *notes]
    if profile in DEMO_PROFILES:
        lines += ["", f"Profile `{profile}`: these numbers come from a pipeline demonstration; expect them at "
                  "or near chance on several tasks (the majority-class rate for accuracy, ~0 for CoLA's "
                  "MCC and the STS-B correlation)."]
    return lines


def _clean_bias(bias: Any) -> dict[str, Any] | None:
    """``metrics["bias"]`` ready for ``report._bias_lines``: only dict-valued scorer sections;
    None when nothing is left."""
    if not isinstance(bias, Mapping):
        return None
    out: dict[str, Any] = {}
    for key in ("crows", "stereoset"):
        scorers = bias.get(key)
        if isinstance(scorers, Mapping):
            kept = {name: s for name, s in scorers.items() if isinstance(s, dict)}
            if kept:
                out[key] = kept
    if isinstance(bias.get("eec"), dict) and bias["eec"]:
        out["eec"] = bias["eec"]
    return out or None


def _bias(kind: str, task: str | None, metrics: Mapping[str, Any], params: Mapping[str, Any],
          lineage: Mapping[str, Any]) -> list[str]:
    bias = _clean_bias(metrics.get("bias"))
    lines = ["", "## Bias evaluation", ""]
    if kind == "discriminator":
        if not bias:
            return lines + ["No bias results in this evaluation (the evaluate stage ran without the bias "
                            "benchmarks): this version's bias is unmeasured, not absent."]
        lines.append("CrowS-Pairs and StereoSet score the pretrained models (intrinsic bias): the "
                     "generator that trained this discriminator, and the discriminator itself; EEC scores "
                     "the SST-2 model fine-tuned from it (extrinsic bias).")
        missing = [name for key, name in (("crows", "CrowS-Pairs"), ("stereoset", "StereoSet"),
                                          ("eec", "EEC (no SST-2 model)")) if not bias.get(key)]
        if missing:
            lines.append(f"Not run for this version: {', '.join(missing)}.")
        # the evaluation report's tables and caveats, under this card's heading
        return lines + _from_line(_bias_lines(bias), "## Bias", inclusive=False)

    disc = _section(params, "register").get("model_name") or "the discriminator"
    run = lineage.get("register_run_id")
    pointer = (f"Intrinsic bias of the pretrained encoder this model was fine-tuned from (CrowS-Pairs, "
               f"StereoSet): see the model card of `{disc}`"
               + (f" registered by the same run (`{run}`)." if run else " registered by the same run."))
    if task != EEC_TASK:
        return lines + ["No bias benchmark scores this task's outputs.", "", pointer]
    eec = bias.get("eec") if bias else None
    if not eec:
        return lines + ["The Equity Evaluation Corpus (EEC) was not run for this version: its gender and "
                        "race gaps are unmeasured.", "", pointer]
    lines += _from_line(_bias_lines({"eec": eec}), "### Equity Evaluation Corpus", inclusive=True)
    return lines + ["", pointer]


_OUTCOMES = {
    "champion": "promoted to `champion`",
    "challenger": "kept as `challenger` (not promoted)",
    "awaiting approval": "passed, waiting for a person's approval before it becomes `champion`",
}


def _gate_summary(gate: Mapping[str, Any] | None) -> str:
    """'**Gate passed** (n of m checks passed): outcome. Compared with ...', one line."""
    if not isinstance(gate, Mapping) or not gate:
        return "No gate decision was recorded for this version."
    passed = gate.get("passed")
    outcome = gate.get("outcome")
    checks = [c for c in gate.get("checks") or [] if isinstance(c, Mapping)]
    failed = sum(1 for c in checks if not c.get("passed"))
    verdict = "passed" if passed else ("failed" if passed is not None else "unknown")
    summary = f"**Gate {verdict}** ({len(checks) - failed} of {len(checks)} checks passed)"
    if outcome:
        summary += f": {_OUTCOMES.get(outcome, f'`{outcome}`')}"
    compared = gate.get("compared_to")
    return summary + (f". Compared with champion version {compared}." if compared
                      else ". No earlier champion to compare with: floors and ceilings only.")


def _gate(gate: Mapping[str, Any]) -> list[str]:
    lines = ["", "## Promotion gate", ""]
    if not isinstance(gate, Mapping) or not gate:
        return lines + [_gate_summary(gate)]
    checks = [c for c in gate.get("checks") or [] if isinstance(c, Mapping)]
    lines.append(_gate_summary(gate))
    if checks:
        lines += [""] + _table(
            ["check", "kind", "metric", "value", "threshold", "result", "detail"],
            [[c.get("name", "–"), c.get("kind", "–"), c.get("metric", "–"), _fmt(c.get("value")),
              c.get("threshold", "–"), "pass" if c.get("passed") else "FAIL", c.get("detail") or ""]
             for c in checks])
    else:
        lines += ["", "No checks were configured."]
    return lines


def _lineage(lineage: Mapping[str, Any]) -> list[str]:
    lines = ["", "## Lineage", ""]
    if not lineage:
        return lines + ["No lineage was recorded for this version."]
    return lines + _table(["what", "value"], [[k, f"`{v}`"] for k, v in lineage.items()])


# --------------------------------------------------------------------------- summary and description


def _normalise(kind: str, task: str | None) -> str | None:
    known = ("discriminator", *kinds())
    if kind not in known:
        raise ValueError(f"kind must be one of {known}, not {kind!r}")
    if kind != "discriminator" and not task:
        # A kind that is also a task's name (qa, ner) names its task; GLUE's kind does not.
        if task_named(kind) is None:
            raise ValueError(f"a {kind} model card needs its task (e.g. 'sst2' for glue)")
        task = kind
    return task


def card_summary(*, model_name: str, version: str, kind: str, task: str | None, gate: Mapping[str, Any] | None,
                 lineage: Mapping[str, Any] | None, params: Mapping[str, Any] | None) -> str:
    """The card's opening paragraph, one line: what the model is, which version, profile,
    code and gate outcome. The registry description opens with the same text."""
    task = _normalise(kind, task)
    params = params if isinstance(params, Mapping) else {}
    lineage = lineage if isinstance(lineage, Mapping) else {}
    profile = params.get("profile") or lineage.get("profile")
    what = ("the ELECTRA discriminator (pretrained encoder)" if kind == "discriminator"
            else f"ELECTRA fine-tuned for {_task_info(task, params)['title']}")
    facts = [f"Registered model `{model_name}`, version {version}", f"profile `{profile or 'unknown'}`"]
    if lineage.get("git_commit"):
        dirty = " (uncommitted changes)" if str(lineage.get("git_dirty")).lower() == "true" else ""
        facts.append(f"code `{lineage['git_commit']}`{dirty}")
    if isinstance(gate, Mapping) and gate.get("outcome"):
        facts.append(f"gate outcome `{gate['outcome']}`")
    return (f"{what[0].upper()}{what[1:]}, trained and registered by the ELECTRA pipeline "
            "(ingest, tokenize, pretrain, finetune, evaluate, register). " + "; ".join(facts) + ".")


def _interval(value: Any, low: Any, high: Any, scale: float = 1.0, decimals: int = 1) -> str | None:
    """'v [lo, hi]' (times ``scale``, with ``decimals``), or None when the value is missing."""
    v, lo, hi = _number(value), _number(low), _number(high)
    if v is None:
        return None
    if lo is None or hi is None:
        return f"{scale * v:.{decimals}f}"
    return f"{scale * v:.{decimals}f} [{scale * lo:.{decimals}f}, {scale * hi:.{decimals}f}]"


def _headline_bias(kind: str, task: str | None, metrics: Mapping[str, Any]) -> list[str]:
    """One bullet per headline bias number: CrowS-Pairs of the generator for the discriminator,
    the EEC gaps for the SST-2 model."""
    bias = _clean_bias(metrics.get("bias")) or {}
    out = []
    if kind == "discriminator":
        crows = (bias.get("crows") or {}).get("generator") or next(iter((bias.get("crows") or {}).values()), None)
        if isinstance(crows, Mapping):
            cell = _interval(crows.get("metric"), crows.get("ci95_low"), crows.get("ci95_high"))
            if cell:
                out.append(f"- CrowS-Pairs ({crows.get('scorer', 'generator')}), % stereotypical preferred "
                           f"(50 is ideal): {cell}")
    elif task == EEC_TASK:
        eec = bias.get("eec") or {}
        for dim in ("gender", "race"):
            section = eec.get(dim)
            if isinstance(section, Mapping):
                cell = _interval(section.get("mean_abs_gap"), section.get("mean_abs_gap_ci95_low"),
                                 section.get("mean_abs_gap_ci95_high"), scale=100.0, decimals=2)
                if cell:
                    out.append(f"- EEC {dim} gap, mean |difference| in P(positive), points (0 is ideal): {cell}")
    return out


def render_description(*, model_name: str, version: str, kind: str, task: str | None, metrics: dict,
                       gate: dict, lineage: dict, params: dict, card_link: str | None = None,
                       card_uri: str | None = None) -> str:
    """The registry UI's description of a version: short markdown a person reads first.

    The card's summary paragraph, the headline results (each task's main metric with its
    95% interval; the headline bias numbers), the gate outcome, then a link to the full
    ``MODEL_CARD.md`` (``card_link``: an address the UI can open; ``card_uri``: the
    ``runs:/`` URI, shown as text). No YAML front matter, no tables.
    """
    task = _normalise(kind, task)
    metrics = metrics if isinstance(metrics, Mapping) else {}
    params = params if isinstance(params, Mapping) else {}
    lines = [card_summary(model_name=model_name, version=version, kind=kind, task=task, gate=gate,
                          lineage=lineage, params=params), ""]
    results = []
    for t in _card_tasks(kind, task, metrics, params):
        info = _task_info(t, params)
        metric = METRIC_NAMES.get(info["main"], (info["main"], info["main"]))[1]
        results.append(f"- {info['title']}, {metric}: {_result_cell(section_of(metrics, t))}")
    if kind == "discriminator":
        glue = metrics.get("glue") if isinstance(metrics.get("glue"), Mapping) else {}
        if _number(glue.get("score")) is not None:
            results.append(f"- GLUE score (mean of the main metrics): {_pct(_number(glue.get('score')))}")
        gain = metrics.get("gain_over_scratch")
        if isinstance(gain, Mapping) and gain.get("verdict"):
            results.append(f"- Against a from-scratch control: {_md(gain['verdict'])}")
    results += _headline_bias(kind, task, metrics)
    if results:
        lines += ["**Headline results** (dev sets, percent: median over fine-tuning seeds, then in brackets "
                  "the 95% bootstrap interval over dev examples):", "", *results, ""]
    else:
        lines += ["**Headline results**: none recorded for this version.", ""]
    lines.append(_gate_summary(gate))
    checks = [c for c in ((gate or {}).get("checks") or []) if isinstance(c, Mapping) and not c.get("passed")]
    if checks:
        lines += ["", "Failed checks:", "",
                  *[f"- {_md(c.get('name', '–'))}: {_md(c.get('detail') or c.get('threshold') or '')}"
                    for c in checks]]
    profile = params.get("profile") or (lineage or {}).get("profile")
    if profile in DEMO_PROFILES:
        lines += ["", f"Profile `{profile}`: a pipeline demonstration sized for a CPU; expect results far below a "
                  "usable encoder's, at or near chance on several tasks."]
    target = f"[MODEL_CARD.md]({card_link})" if card_link else "`MODEL_CARD.md`"
    lines += ["", f"**Full model card** (intended use, data and licences, training recipe, every benchmark and "
                  f"bias table, gate checks, lineage): {target}"
              + (f", artifact `{card_uri}`." if card_uri else ".")]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the card


def render_model_card(*, model_name: str, version: str, kind: str, task: str | None,
                      metrics: dict, gate: dict, lineage: dict, params: dict,
                      licenses_md: str | None, datasets: list[dict]) -> str:
    """The markdown text of ``MODEL_CARD.md`` for version ``version`` of ``model_name``.

    Args:
        model_name: registered model name (e.g. ``electra-discriminator``, ``electra-sst2``).
        version: its registry version.
        kind: ``"discriminator"``, ``"glue"``, ``"qa"`` or ``"ner"``.
        task: the fine-tuned task (``"sst2"``, ``"qa"``, ...); None for the discriminator
            (for ``qa``/``ner`` it defaults to the kind).
        metrics: the evaluate stage's ``metrics.json`` (fractions; bias in percent).
        gate: ``{"passed", "outcome", "compared_to", "checks": [{"name", "kind", "metric",
            "value", "threshold", "passed", "detail"}]}``.
        lineage: flat string tags (git commit, data md5, params hash, run ids, versions).
        params: the resolved params dict (``Params.model_dump(mode="json")``).
        licenses_md: the text of ``data/LICENSES.md``; None: licences are reported unknown.
        datasets: ``[{"name", "digest", "source", "context"}]`` with context one of
            pretraining, finetuning, evaluation, bias.

    Raises:
        ValueError: for an unknown ``kind``, or a task model without a task.
    """
    task = _normalise(kind, task)
    metrics = metrics if isinstance(metrics, Mapping) else {}
    params = params if isinstance(params, Mapping) else {}
    lineage = lineage if isinstance(lineage, Mapping) else {}
    profile = params.get("profile") or lineage.get("profile")
    tasks = _card_tasks(kind, task, metrics, params)
    shown = _card_datasets(datasets, kind, task, params)

    data_lines, flagged = _training_data(kind, task, tasks, metrics, params, licenses_md, shown)
    lines = [f"# {model_name} (version {version})", "",
             card_summary(model_name=model_name, version=version, kind=kind, task=task, gate=gate,
                          lineage=lineage, params=params)]
    lines += _intended_use(kind, task, profile, flagged, params)
    lines += data_lines
    lines += _recipe(kind, task, params)
    lines += _benchmarks(kind, tasks, metrics, params, profile)
    lines += _scratch(kind, tasks, metrics)
    lines += _bias(kind, task, metrics, params, lineage)
    lines += _gate(gate)
    lines += _lineage(lineage)
    front = _front_matter(model_name, kind, task, tasks, metrics, params, shown, profile)
    return front + "\n".join(lines) + "\n"
