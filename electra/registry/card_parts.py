"""The pieces of a model card that are facts about the data and the recipe: small
renderers, what the card says about each task (from its kind's
:meth:`~electra.tasks.base.Task.card_info`), the datasets and licence lines behind a
card, and the training-data and recipe sections. :mod:`electra.registry.model_card`
assembles the card from them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from electra.data.sources import TSV_PREFIX, parse_tsv_source
from electra.evaluation.report import scratch_rows
from electra.evaluation.results import EEC_TASK, GLUE_ORDER, all_sections
from electra.tasks.base import task_named

CONTEXTS = ("pretraining", "finetuning", "evaluation", "bias")
RECIPE_OVERRIDES = ("epochs", "lr", "max_train_examples", "max_seq_length", "batch_size")
# ingest's task-text sources, tsv:<file>?columns=..[&header=none] (electra.data.sources, which
# checks them; read here without importing it: the register stage's code is not the data layer's).

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


def _card_tasks(kind: str, task: str | None, metrics: Mapping[str, Any], params: Mapping[str, Any]) -> list[str]:
    """The tasks a card reports: its own for a task model; for the discriminator every task
    fine-tuned (params) or evaluated (metrics), GLUE first in the paper's order, then the
    others in the order ``finetune.tasks`` gives."""
    if kind != "discriminator":
        return [task] if task else []
    named = list(_section(params, "finetune").get("tasks") or [])
    named += [t for t in all_sections(metrics if isinstance(metrics, dict) else {}) if t not in named]
    glue = metrics.get("glue") if isinstance(metrics.get("glue"), Mapping) else {}
    named += [t for t, s in glue.items() if isinstance(s, dict) and t not in named]
    return [t for t in GLUE_ORDER if t in named] + [t for t in named if t not in GLUE_ORDER]


def _task_info(task: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Display name, use, Hugging Face task/dataset ids, metric keys, data paths and the
    names a dataset of ``task`` goes by (its kind's card facts; plain ones for a task no
    kind knows)."""
    impl = task_named(task, _section(params, "finetune"))
    if impl is None:
        return {"title": task, "use": f"the {task} task", "hf_task": ("text-classification", "Text Classification"),
                "dataset": {"name": task, "type": task, "split": "validation"},
                "metrics": ["main"], "main": "main", "paths": [], "aliases": (task,), "benchmark": None}
    info = impl.card_info()
    return {"title": info.title, "use": info.use, "hf_task": info.hf_task, "dataset": dict(info.dataset),
            "metrics": list(info.metrics), "main": info.main, "paths": list(info.paths),
            "aliases": info.aliases or (task,), "benchmark": info.benchmark}


def _own_overrides(params: Mapping[str, Any], task: str | None) -> dict[str, Any]:
    """The recipe settings ``task``'s catalog entry overrides (those it sets)."""
    catalog = _section(params, "finetune").get("catalog")
    entry = catalog.get(task) if isinstance(catalog, dict) and task else None
    return {k: entry[k] for k in RECIPE_OVERRIDES if entry.get(k) is not None} if isinstance(entry, dict) else {}


# --------------------------------------------------------------------------- datasets and licences


def _card_datasets(datasets: list[dict], kind: str, task: str | None,
                   params: Mapping[str, Any] | None = None) -> list[dict]:
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
    own = [d for d in rows if d.get("context") in ("finetuning", "evaluation") and mentions(d, _task_info(task, params or {})["aliases"])]
    eec = [d for d in rows if d.get("context") == "bias" and task == EEC_TASK and mentions(d, ("eec", "equity"))]
    other = [d for d in rows if d.get("context") not in CONTEXTS]
    return pretraining + own + eec + other


def _data_paths(kind: str, tasks: list[str], metrics: Mapping[str, Any], params: Mapping[str, Any],
                datasets: list[dict]) -> list[str]:
    """The data files and folders behind this card: what its licence lines are looked up by."""
    ingest, tok, ev = _section(params, "ingest"), _section(params, "tokenize"), _section(params, "evaluate")
    paths: list[str] = []
    for source in ingest.get("sources") or ["data/pretrain"]:
        # a task's tsv: train file names its file; a glob names its folder: cut at the first wildcard
        source = str(source)
        paths.append(str(parse_tsv_source(source).path) if source.startswith(TSV_PREFIX)
                     else re.split(r"[*?\[]", source, maxsplit=1)[0])
    if not tok.get("train_vocab"):
        paths.append(str(tok.get("vocab_file") or "data/vocab/bert-base-uncased-vocab.txt"))
    for task in tasks:
        paths += _task_info(task, params)["paths"]
    bias = metrics.get("bias") if isinstance(metrics.get("bias"), dict) else {}
    folders = {"crows": "crows_pairs", "stereoset": "stereoset", "eec": "eec"}
    wanted = list(folders) if kind == "discriminator" else (["eec"] if EEC_TASK in tasks else [])
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


def _training_data(kind: str, task: str | None, tasks: list[str], metrics: Mapping[str, Any],
                   params: Mapping[str, Any], licenses_md: str | None,
                   datasets: list[dict]) -> tuple[list[str], list[str]]:
    """The training-data section and the names of the flagged (not openly licensed) datasets."""
    ingest, tok = _section(params, "ingest"), _section(params, "tokenize")
    lines = ["", "## Training data", "", "### Pretraining corpus", ""]
    all_sources = [str(s) for s in ingest.get("sources") or []]
    task_text = [s for s in all_sources if s.startswith(TSV_PREFIX)]
    plain = [s for s in all_sources if s not in task_text]
    sources = (", ".join(f"`{s}`" for s in plain) or ("no other source" if task_text else
                                                        "unknown (no `ingest.sources`)"))
    excluded = ", ".join(f"`{e}`" for e in ingest.get("exclude") or [])
    vocab = ("a WordPiece vocabulary trained on the corpus" if tok.get("train_vocab")
             else f"the WordPiece vocabulary `{tok.get('vocab_file', 'unknown')}`")
    lines.append(f"Plain English text from {sources}" + (f" (excluding {excluded})" if excluded else "")
                 + (", de-duplicated" if ingest.get("dedup") else "") + f"; tokenized with {vocab} "
                 f"({tok.get('vocab_size', '?')} tokens, {'lowercased' if tok.get('lowercase') else 'cased'}) "
                 f"into sequences of up to {tok.get('max_seq_length', '?')} tokens.")
    if task_text:
        lines += ["", _task_text_line(task_text)]
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
    glue_used = (any(_task_info(t, params)["benchmark"] == "GLUE" for t in tasks)
                 or any("glue" in parse_tsv_source(s).path.parts for s in (ingest.get("sources") or [])
                        if str(s).startswith(TSV_PREFIX)))
    notes = _licence_notes(licenses_md, glue_used)
    if notes:
        lines += ["", f"From `{licences_file}`:", ""]
        for note in notes:
            lines += [note, ""]
        lines.pop()
    lines += ["", f"Citations for every dataset: `{licences_file}`."]
    return lines, flagged


def _task_text_line(sources: list[str]) -> str:
    """What the card says of task-adaptive pretraining: whose train text, which columns."""
    files = []
    for source in sources:
        tsv = parse_tsv_source(source)
        named = ", ".join(f"`{c}`" if tsv.header else f"column {c}" for c in tsv.columns)
        files.append(f"`{tsv.path}` ({named})")
    return ("Task-adaptive pretraining (Gururangan et al., 2020, \"Don't Stop Pretraining\"): the unlabelled "
            f"text of the fine-tuning tasks' *train* files {', '.join(files)} was added to the corpus: "
            "the text only, never the labels, and never dev or test text (ingest refuses those files), "
            "so nothing the model is evaluated on was seen in pretraining.")


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
    catalog = ft.get("catalog") if isinstance(ft.get("catalog"), dict) else {}

    def setting(key: str, own: Mapping[str, Any]) -> str:
        value = own.get(key)
        return f"{_fmt(value)} (task override)" if value is not None else _fmt(ft.get(key))

    own = _own_overrides(params, task) if kind != "discriminator" else {}
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
        changed = {t: o for t in catalog if (o := _own_overrides(params, t))}
        if changed:
            lines += ["", "Per-task overrides: " + "; ".join(
                f"{t}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in o.items()) for t, o in changed.items()) + "."]
    return lines


def _scratch(kind: str, tasks: list[str], metrics: Mapping[str, Any]) -> list[str]:
    """The card's comparison with the from-scratch control: a row per task (and, for the
    discriminator, the GLUE mean and the verdict), as the evaluation report has it."""
    own = dict(metrics)
    if kind != "discriminator":   # a task model: its own task's row, not the GLUE mean
        own.pop("gain_over_scratch", None)
    rows = scratch_rows(own, tasks)
    lines = ["", "## Gain from pretraining over a from-scratch control", ""]
    if not rows:
        return lines + ["No scratch control was evaluated for this version (evaluate.scratch_control)."]
    lines.append("The same architecture fine-tuned from random weights with the same recipe, seeds and "
                 "examples. Percent; gain in points, with its paired 95% bootstrap interval over dev examples "
                 "(and a Student-t interval over seeds when there are several).")
    lines += [""] + _table(["task", "pretrained", "scratch", "gain [95% CI]", "gain over seeds [95% CI]"], rows)
    verdict = (own.get("gain_over_scratch") or {}).get("verdict") if isinstance(own.get("gain_over_scratch"), Mapping) else None
    if verdict:
        lines += ["", f"Verdict: {verdict[:1].upper() + verdict[1:]}"]
    return lines
