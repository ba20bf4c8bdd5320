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
benchmark results       ``metrics`` (glue/qa/ner) and ``evaluate.REFERENCE_ROWS``
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

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from electra.evaluation.evaluate import GLUE_ORDER, REFERENCE_ROWS
from electra.tasks.glue import TASKS as GLUE_TASKS
from electra.evaluation.report import _bias_lines, _cell, _pct

# _bias_lines, _cell and _pct are report.py's private renderers, imported on purpose:
# the card shows the same numbers, the same way, as the evaluation report.

KINDS = ("discriminator", "glue", "qa", "ner")
EXTRA_TASKS = ("qa", "ner")
CONTEXTS = ("pretraining", "finetuning", "evaluation", "bias")

# metrics.json key -> (Hugging Face metric id, display name)
METRIC_NAMES = {
    "accuracy": ("accuracy", "Accuracy"),
    "f1": ("f1", "F1"),
    "mcc": ("matthews_correlation", "Matthews correlation"),
    "spearman": ("spearmanr", "Spearman correlation"),
    "pearson": ("pearsonr", "Pearson correlation"),
    "exact_match": ("exact_match", "Exact match"),
    "precision": ("precision", "Precision"),
    "recall": ("recall", "Recall"),
}

# What each task's model does, for "intended use".
TASK_USE = {
    "sst2": "binary sentiment (negative / positive) of English sentences from movie reviews",
    "mrpc": "whether two English sentences (news) are paraphrases of each other",
    "rte": "whether one English sentence entails another",
    "cola": "whether an English sentence is grammatically acceptable",
    "stsb": "the semantic similarity of two English sentences on a 0-5 scale",
    "qnli": "whether an English sentence answers a question",
    "qa": "extractive question answering: the span of an English paragraph that answers a question",
    "ner": ("named-entity tagging of English social-media text (person, location, group, "
            "creative-work, corporation, product)"),
}

# Profiles that exist to show the pipeline runs, not to produce a usable model.
DEMO_PROFILES = ("tiny", "micro")


# --------------------------------------------------------------------------- small helpers


def _number(value: Any) -> float | None:
    """``value`` as a finite float, else None (bools, strings, NaN and None are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _md(value: Any) -> str:
    """Text safe inside a markdown table cell: no pipes, no line breaks."""
    return str(value).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _fmt(value: Any) -> str:
    """A gate or recipe value: 4 significant digits for floats, '–' for None."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _section(params: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = params.get(name) if isinstance(params, Mapping) else None
    return value if isinstance(value, dict) else {}


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md(cell) for cell in row) + " |" for row in rows]
    return lines


def _from_line(lines: list[str], prefix: str, inclusive: bool) -> list[str]:
    """``lines`` from the first one starting with ``prefix`` (all of them when none does).

    Lets the card reuse ``report._bias_lines`` under its own heading, or only its EEC part.
    """
    for i, line in enumerate(lines):
        if line.startswith(prefix):
            return lines[i if inclusive else i + 1:]
    return lines


# --------------------------------------------------------------------------- tasks


def _task_section(metrics: Mapping[str, Any], task: str) -> dict[str, Any] | None:
    """The metrics.json section of ``task`` (GLUE tasks sit under ``glue``), or None."""
    holder = metrics if task in EXTRA_TASKS else (metrics.get("glue") or {})
    section = holder.get(task) if isinstance(holder, Mapping) else None
    return section if isinstance(section, dict) else None


def _card_tasks(kind: str, task: str | None, metrics: Mapping[str, Any], params: Mapping[str, Any]) -> list[str]:
    """The tasks a card reports: its own for a task model; for the discriminator every task
    fine-tuned (params) or evaluated (metrics), GLUE first in the paper's order."""
    if kind != "discriminator":
        return [task] if task else []
    named = set(_section(params, "finetune").get("tasks") or [])
    glue = metrics.get("glue") or {}
    named |= {t for t, s in glue.items() if isinstance(s, dict)} if isinstance(glue, Mapping) else set()
    named |= {t for t in EXTRA_TASKS if isinstance(metrics.get(t), dict)}
    order = [*GLUE_ORDER, *EXTRA_TASKS]
    return [t for t in order if t in named] + sorted(named - set(order))


def _task_info(task: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Display name, Hugging Face task/dataset ids, metric keys and data paths of ``task``."""
    ft = _section(params, "finetune")
    if task in GLUE_TASKS:
        spec = GLUE_TASKS[task]
        return {"title": f"GLUE {spec.folder}", "hf_task": ("text-classification", "Text Classification"),
                "dataset": {"name": f"GLUE {spec.folder}", "type": "nyu-mll/glue", "config": task,
                            "split": "validation"},
                "metrics": list(spec.metric_names), "main": spec.main_metric,
                "paths": [f"{ft.get('data_dir', 'data/glue')}/{spec.folder}"]}
    if task == "qa":
        qa_file = str(ft.get("qa_file") or "data/qa/xquad/xquad.en.json")
        held_out = ft.get("qa_dev_file") is None
        if "xquad" in qa_file.lower():
            dataset = {"name": "XQuAD (English)" + (", held-out articles" if held_out else ""),
                       "type": "google/xquad", "config": "xquad.en", "split": "validation"}
        else:
            dataset = {"name": f"SQuAD-format QA ({qa_file.rsplit('/', 1)[-1]})", "type": "squad",
                       "split": "validation"}
        return {"title": "Extractive QA", "hf_task": ("question-answering", "Question Answering"),
                "dataset": dataset, "metrics": ["exact_match", "f1"], "main": "f1",
                "paths": [p for p in (qa_file, ft.get("qa_dev_file")) if p]}
    if task == "ner":
        train = str(ft.get("ner_train_file") or "data/ner/wnut17/wnut17train.conll")
        dataset = ({"name": "WNUT-17", "type": "leondz/wnut_17", "split": "validation"}
                   if "wnut" in train.lower() else
                   {"name": f"CoNLL NER ({train.rsplit('/', 1)[-1]})", "type": "conll", "split": "validation"})
        return {"title": "NER (entity-level)", "hf_task": ("token-classification", "Token Classification"),
                "dataset": dataset, "metrics": ["precision", "recall", "f1"], "main": "f1",
                "paths": [p for p in (train, ft.get("ner_dev_file")) if p]}
    return {"title": task, "hf_task": ("text-classification", "Text Classification"),
            "dataset": {"name": task, "type": task, "split": "validation"},
            "metrics": ["main"], "main": "main", "paths": []}


def _model_index(model_name: str, tasks: list[str], metrics: Mapping[str, Any],
                 params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``model-index`` block: one result per evaluated task, every metric in percent.

    Values are the medians over fine-tuning seeds (the numbers of metrics.json), as the
    evaluation report shows them; skipped tasks and missing values are left out, since
    the Hub wants a number in every ``value``.
    """
    results = []
    for task in tasks:
        section = _task_section(metrics, task)
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


# --------------------------------------------------------------------------- datasets and licences


def _task_aliases(task: str) -> tuple[str, ...]:
    """Strings that name ``task`` in a dataset's name or source (case-insensitive)."""
    if task in GLUE_TASKS:
        return (task, GLUE_TASKS[task].folder.lower())
    return {"qa": ("qa", "xquad", "squad"), "ner": ("ner", "wnut")}.get(task, (task,))


def _card_datasets(datasets: list[dict], kind: str, task: str | None) -> list[dict]:
    """The logged datasets a card lists: all for the discriminator; for a task model the
    pretraining corpus, the entries whose name or source names its task (``sst2``,
    ``SST-2``, ``wnut17``, ...) and, for SST-2, the EEC. Another task's entry is left
    out even when none names this task: its licence line would be wrong on this card.
    """
    rows = [d for d in datasets or [] if isinstance(d, Mapping)]
    if kind == "discriminator" or not task:
        return rows

    def mentions(d: Mapping, words: Iterable[str]) -> bool:
        # whole words, digits allowed after them: "wnut17" names wnut, "corner" does not name ner
        text = f"{d.get('name', '')} {d.get('source', '')}".lower()
        return any(re.search(rf"(?<![a-z]){re.escape(w)}(?![a-z])", text) for w in words)

    pretraining = [d for d in rows if d.get("context") == "pretraining"]
    own = [d for d in rows if d.get("context") in ("finetuning", "evaluation") and mentions(d, _task_aliases(task))]
    eec = [d for d in rows if d.get("context") == "bias" and task == "sst2" and mentions(d, ("eec", "equity"))]
    other = [d for d in rows if d.get("context") not in CONTEXTS]
    return pretraining + own + eec + other


def _data_paths(kind: str, tasks: list[str], metrics: Mapping[str, Any], params: Mapping[str, Any],
                datasets: list[dict]) -> list[str]:
    """The data files and folders behind this card: what its licence lines are looked up by."""
    ingest, tok, ev = _section(params, "ingest"), _section(params, "tokenize"), _section(params, "evaluate")
    paths: list[str] = []
    for source in ingest.get("sources") or ["data/pretrain"]:
        # a glob names its folder: cut at the first wildcard
        paths.append(re.split(r"[*?\[]", str(source), maxsplit=1)[0])
    if not tok.get("train_vocab"):
        paths.append(str(tok.get("vocab_file") or "data/vocab/bert-base-uncased-vocab.txt"))
    for task in tasks:
        paths += _task_info(task, params)["paths"]
    bias = metrics.get("bias") if isinstance(metrics.get("bias"), dict) else {}
    folders = {"crows": "crows_pairs", "stereoset": "stereoset", "eec": "eec"}
    wanted = list(folders) if kind == "discriminator" else (["eec"] if "sst2" in tasks else [])
    data_dir = str(ev.get("data_dir") or "data")
    paths += [f"{data_dir}/bias/{folders[b]}" for b in wanted if bias.get(b)]
    paths += [str(d["source"]) for d in datasets if d.get("source")]
    return paths


def _relative(path: str, base: str) -> str:
    path = path.strip().removeprefix("./")
    base = base.strip().removeprefix("./").rstrip("/")
    if base and path.startswith(base + "/"):
        path = path[len(base) + 1:]
    return path.strip("/")


def _licence_lines(licenses_md: str, paths: list[str], base: str) -> tuple[list[str], list[str], list[str]]:
    """From LICENSES.md: its table header, the rows whose dataset path covers or lies under
    one of ``paths``, and the names of the matched rows that it flags as not open.

    A row's path is the backticked folder in its first cell, e.g. ``(`glue/SST-2/`)``;
    paths are compared relative to the folder of LICENSES.md (``base``), segment-wise.
    """
    used = [_relative(p, base) for p in paths if p]
    table = [line for line in licenses_md.splitlines() if line.lstrip().startswith("|")]
    header, rows, flagged = table[:2], [], []
    for line in table[2:]:
        first = line.strip().strip("|").split("|")[0]
        row_paths = [p.strip("/") for p in re.findall(r"`([^`]+)`", first)]

        def covers(a: str, b: str) -> bool:
            return bool(a and b) and (a == b or a.startswith(b + "/") or b.startswith(a + "/"))

        if any(covers(rp, u) for rp in row_paths for u in used):
            rows.append(line)
            if "flagged" in line.lower():
                flagged.append(re.sub(r"\s*\(`[^`]*`\)", "", first).strip())
    return header, rows, flagged


def _licence_notes(licenses_md: str, glue_used: bool) -> list[str]:
    """LICENSES.md's own paragraphs on flagged data (and on GLUE's terms when GLUE is used), quoted."""
    notes = []
    for paragraph in re.split(r"\n\s*\n", licenses_md):
        text = paragraph.strip()
        if not text or text.startswith(("|", "#", "-")):
            continue
        if "flagged" in text.lower() or (glue_used and "GLUE itself" in text):
            notes.append("> " + " ".join(text.split()))
    return notes


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
        use = TASK_USE.get(task or kind, f"the {task or kind} task")
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
                      "profile, a demonstration that every stage runs end to end on a CPU in minutes "
                      "(a tiny encoder, a few hundred pretraining steps). Its scores are at or near "
                      "chance: it is not a usable model.")
    lines += [f"- {item}" for item in out]
    return lines


def _training_data(kind: str, task: str | None, tasks: list[str], metrics: Mapping[str, Any],
                   params: Mapping[str, Any], licenses_md: str | None,
                   datasets: list[dict]) -> tuple[list[str], list[str]]:
    """The training-data section and the names of the flagged (not openly licensed) datasets."""
    ingest, tok = _section(params, "ingest"), _section(params, "tokenize")
    lines = ["", "## Training data", "", "### Pretraining corpus", ""]
    sources = ", ".join(f"`{s}`" for s in ingest.get("sources") or []) or "unknown (no `ingest.sources`)"
    excluded = ", ".join(f"`{e}`" for e in ingest.get("exclude") or [])
    vocab = ("a WordPiece vocabulary trained on the corpus" if tok.get("train_vocab")
             else f"the WordPiece vocabulary `{tok.get('vocab_file', 'unknown')}`")
    lines.append(f"Plain English text from {sources}" + (f" (excluding {excluded})" if excluded else "")
                 + (", de-duplicated" if ingest.get("dedup") else "") + f"; tokenized with {vocab} "
                 f"({tok.get('vocab_size', '?')} tokens, {'lowercased' if tok.get('lowercase') else 'cased'}) "
                 f"into sequences of up to {tok.get('max_seq_length', '?')} tokens.")
    if kind == "discriminator":
        lines += ["", "The discriminator saw only this corpus. The fine-tuning and bias data below were "
                  "used to evaluate it (each task through a model fine-tuned from it)."]
    else:
        lines += ["", f"Fine-tuned on the training split of {_task_info(task or kind, params)['title']}; "
                  "scored on its dev split (below)."]

    lines += ["", "### Datasets and digests", ""]
    if datasets:
        order = {c: i for i, c in enumerate(CONTEXTS)}
        rows = sorted(datasets, key=lambda d: order.get(d.get("context"), len(order)))
        lines += _table(["used for", "dataset", "digest", "source"],
                        [[d.get("context", "–"), d.get("name", "–"), f"`{d.get('digest', '–')}`",
                          d.get("source", "–")] for d in rows])
    else:
        lines.append("No dataset was logged with this version: no digests to show.")

    lines += ["", "### Licences", ""]
    licences_file = str(_section(params, "register").get("licenses_file") or "data/LICENSES.md")
    if licenses_md is None:
        lines.append(f"**Licences unknown**: no `{licences_file}` was supplied with this version. Treat "
                     "every dataset's terms as unknown and do not redistribute this model until checked.")
        return lines, []
    base = licences_file.rsplit("/", 1)[0] if "/" in licences_file else ""
    header, rows, flagged = _licence_lines(licenses_md, _data_paths(kind, tasks, metrics, params, datasets), base)
    if rows:
        lines.append(f"The lines of `{licences_file}` for the data behind this card:")
        lines += ["", *header, *rows]
    else:
        lines.append(f"`{licences_file}` has no line for the data behind this card: its licences are unknown.")
    if flagged:
        lines += ["", f"**Research use only.** {len(flagged)} of these datasets are flagged in "
                  f"`{licences_file}` as not under an open licence: {', '.join(flagged)}. "
                  "Results on them, and any model fine-tuned on them, are for local research use: do not ship "
                  "such a model in a release or list that data as open training data without checking the terms."]
    glue_used = any(t in GLUE_TASKS for t in tasks)
    notes = _licence_notes(licenses_md, glue_used)
    if notes:
        lines += ["", f"From `{licences_file}`:", ""]
        for note in notes:
            lines += [note, ""]
        lines.pop()
    lines += ["", f"Citations for every dataset: `{licences_file}`."]
    return lines, flagged


def _recipe(kind: str, task: str | None, params: Mapping[str, Any]) -> list[str]:
    pre, ft, tok = _section(params, "pretrain"), _section(params, "finetune"), _section(params, "tokenize")
    model = pre.get("model") if isinstance(pre.get("model"), dict) else {}
    lines = ["", "## Training recipe", "", "### Pretraining", ""]
    hidden, heads, ffn = model.get("hidden_size"), model.get("num_heads"), model.get("intermediate_size")
    frac = _number(model.get("generator_fraction"))
    objective = pre.get("objective", "electra")
    rows = [["encoder (discriminator)",
             f"{model.get('num_layers', '?')} layers, hidden {hidden or '?'}, {heads or '?'} heads, "
             f"FFN {ffn or '?'}, embeddings {model.get('embedding_size', '?')}, dropout {model.get('dropout', '?')}"]]
    if objective == "electra":
        # the generator's shape as electra.pretraining.model.generator_config derives it: same depth, a
        # fraction of the width (hidden, heads and FFN), embeddings shared with the discriminator
        if frac is not None and all(_number(x) is not None for x in (hidden, heads, ffn)):
            gen = (f"{model.get('num_layers', '?')} layers, hidden {round(hidden * frac)}, "
                   f"{max(1, round(heads * frac))} head(s), FFN {max(1, round(ffn * frac))} "
                   f"(generator_fraction {frac:g}); embeddings shared with the discriminator")
        else:
            gen = f"generator_fraction {_fmt(model.get('generator_fraction'))}"
        rows.append(["generator", gen])
        rows.append(["objective",
                     f"ELECTRA replaced-token detection: {_fmt(pre.get('mask_prob'))} of the tokens masked "
                     f"({_fmt(pre.get('mask_token_prob'))} of them shown as [MASK]), the generator (masked LM) "
                     "fills them by sampling, the discriminator tells replaced tokens from originals; "
                     f"loss = {_fmt(pre.get('generator_weight'))} x generator MLM + "
                     f"{_fmt(pre.get('discriminator_weight'))} x discriminator"])
    else:
        rows.append(["objective", f"BERT-style masked LM baseline ({objective}): "
                                  f"{_fmt(pre.get('mask_prob'))} of the tokens masked, same encoder, no generator"])
    batch, accum = pre.get("batch_size"), pre.get("grad_accum_steps") or 1
    effective = batch * accum if _number(batch) is not None and _number(accum) is not None else "?"
    rows += [["steps", _fmt(pre.get("max_steps"))],
             ["batch", f"{effective} sequences ({_fmt(batch)} x {accum} accumulation)"],
             ["sequence length", _fmt(tok.get("max_seq_length"))],
             ["optimiser", f"AdamW, lr {_fmt(pre.get('lr'))}, {_fmt(pre.get('warmup_steps'))} warm-up steps then "
                           f"linear decay, weight decay {_fmt(pre.get('weight_decay'))}, betas "
                           f"({_fmt(pre.get('adam_beta1'))}, {_fmt(pre.get('adam_beta2'))}), eps "
                           f"{_fmt(pre.get('adam_eps'))}, grad-norm clip {_fmt(pre.get('max_grad_norm'))}"],
             ["precision", _fmt(pre.get("precision"))],
             ["seed", _fmt(pre.get("seed"))]]
    lines += _table(["setting", "value"], rows)

    lines += ["", "### Fine-tuning", ""]
    seeds, first = ft.get("seeds"), ft.get("seed")
    if isinstance(seeds, int) and isinstance(first, int):
        # the seeds electra.tasks.finetune.seeds_of uses: seed, seed + 1, ...
        seed_text = f"{seeds} ({', '.join(str(first + i) for i in range(seeds))}); the registered model is seed {first}'s"
    else:
        seed_text = _fmt(seeds)
    overrides = ft.get("task_overrides") if isinstance(ft.get("task_overrides"), dict) else {}

    def setting(key: str, own: Mapping[str, Any]) -> str:
        value = own.get(key)
        return f"{_fmt(value)} (task override)" if value is not None else _fmt(ft.get(key))

    own = overrides.get(task, {}) if kind != "discriminator" and task else {}
    own = own if isinstance(own, dict) else {}
    rows = [["learning rate", setting("lr", own)],
            ["layer-wise lr decay", _fmt(ft.get("layer_decay"))],
            ["epochs", setting("epochs", own)],
            ["batch size", setting("batch_size", own)],
            ["max sequence length", setting("max_seq_length", own)],
            ["max training examples", setting("max_train_examples", own)],
            ["warm-up fraction / weight decay", f"{_fmt(ft.get('warmup_fraction'))} / {_fmt(ft.get('weight_decay'))}"],
            ["seeds", seed_text]]
    lines += _table(["setting", "value"], rows)
    if kind == "discriminator":
        changed = {t: {k: v for k, v in o.items() if v is not None}
                   for t, o in overrides.items() if isinstance(o, dict)}
        changed = {t: o for t, o in changed.items() if o}
        if changed:
            lines += ["", "Per-task overrides: " + "; ".join(
                f"{t}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in o.items()) for t, o in changed.items()) + "."]
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
        section = _task_section(metrics, task)
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
                  "or near chance (the majority-class rate for accuracy, ~0 for CoLA's MCC and the "
                  "STS-B correlation)."]
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
    if task != "sst2":
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
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    if kind in EXTRA_TASKS and not task:
        task = kind
    if kind == "glue" and not task:
        raise ValueError("a GLUE model card needs its task (e.g. 'sst2')")
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
    elif task == "sst2":
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
        results.append(f"- {info['title']}, {metric}: {_result_cell(_task_section(metrics, t))}")
    if kind == "discriminator":
        glue = metrics.get("glue") if isinstance(metrics.get("glue"), Mapping) else {}
        if _number(glue.get("score")) is not None:
            results.append(f"- GLUE score (mean of the main metrics): {_pct(_number(glue.get('score')))}")
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
        lines += ["", f"Profile `{profile}`: a pipeline demonstration; expect results at or near chance."]
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
    shown = _card_datasets(datasets, kind, task)

    data_lines, flagged = _training_data(kind, task, tasks, metrics, params, licenses_md, shown)
    lines = [f"# {model_name} (version {version})", "",
             card_summary(model_name=model_name, version=version, kind=kind, task=task, gate=gate,
                          lineage=lineage, params=params)]
    lines += _intended_use(kind, task, profile, flagged, params)
    lines += data_lines
    lines += _recipe(kind, task, params)
    lines += _benchmarks(kind, tasks, metrics, params, profile)
    lines += _bias(kind, task, metrics, params, lineage)
    lines += _gate(gate)
    lines += _lineage(lineage)
    front = _front_matter(model_name, kind, task, tasks, metrics, params, shown, profile)
    return front + "\n".join(lines) + "\n"
