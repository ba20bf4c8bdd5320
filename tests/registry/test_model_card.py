"""The model card renderer on metrics shaped by the evaluate and bias code itself.

The metrics dict is not typed by hand: each task section comes from
``evaluate._summarise`` over per-seed scores, and the bias sections from
``bias.crows_summary``, ``bias.stereoset_summary`` and ``bias._eec_dimension``,
so that a change of metrics.json's structure shows up here. Params are the
project's resolved ``params.yaml``; the licences are the real ``data/LICENSES.md``.
"""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import yaml

from electra.evaluation import bias
from electra.core.config import load_params
from electra.evaluation.evaluate import _summarise
from electra.registry.model_card import render_description, render_model_card
from tests.conftest import DATA, ROOT

pytestmark = pytest.mark.data   # reads the datasets in data/

RNG = np.random.default_rng(3)
SEEDS = ("1234", "1235", "1236")


def _task(scores_by_seed: list[dict[str, float]], dev_examples: int) -> dict:
    """One task's metrics.json section, summarised over seeds as the evaluate stage does."""
    per_seed = {}
    for seed, scores in zip(SEEDS, scores_by_seed, strict=True):
        main = scores["main"]
        per_seed[seed] = {**scores, "main_ci": [main - 0.03, main + 0.03]}
    section = _summarise(per_seed, SEEDS[0])
    section["dev_examples"] = dev_examples
    return section


def _bias_section() -> dict:
    """CrowS-Pairs and StereoSet for both scorers and EEC, from the benchmarks' own summaries."""
    n = 120
    types = RNG.choice(["gender", "race-color", "religion"], n)
    dirs = RNG.choice(["stereo", "antistereo"], n)
    domains = RNG.choice(["gender", "profession", "race"], n)
    section: dict = {"crows": {}, "stereoset": {}}
    for scorer in ("generator", "discriminator"):
        crows = bias.crows_summary(RNG.normal(size=n), RNG.normal(size=n), types, dirs, n_bootstrap=200)
        crows.update({"scorer": scorer, "variant": bias.CROWS_VARIANTS[scorer],
                      "data_file": "data/bias/crows_pairs/crows_pairs_anonymized.csv"})
        section["crows"][scorer] = crows
        stereo = bias.stereoset_summary(RNG.normal(size=n), RNG.normal(size=n), RNG.normal(size=n) - 0.5,
                                        domains, n_bootstrap=200)
        stereo.update({"scorer": scorer, "variant": bias.STEREOSET_VARIANTS[scorer],
                       "data_file": "data/bias/stereoset/stereoset_dev_flat.jsonl"})
        section["stereoset"][scorer] = stereo
    # EEC: 40 matched (template, emotion word) groups, one sentence per side per dimension
    rows, groups, probs = [], {}, []
    for g in range(40):
        idx = []
        for gender, race in (("female", "African-American"), ("male", "European")):
            idx.append(len(rows))
            rows.append({"Gender": gender, "Race": race, "Emotion": "joy", "Template": str(g)})
            probs.append(RNG.uniform(0.3, 0.7))
        groups[(str(g), "happy")] = idx
    probs = np.asarray(probs)
    section["eec"] = {"n_sentences": len(rows), "n_groups": len(groups), "n_bootstrap": 200, "seed": 0}
    for key, column, first, second in bias.EEC_DIMENSIONS:
        section["eec"][key] = bias._eec_dimension(rows, groups, probs, column, first, second, n_bootstrap=200)
    return section


@pytest.fixture(scope="module")
def metrics() -> dict:
    """A full metrics.json: five GLUE tasks, qnli skipped, QA, NER, bias."""
    glue = {
        "sst2": _task([{"accuracy": a, "main": a} for a in (0.81, 0.83, 0.82)], 872),
        "mrpc": _task([{"accuracy": a, "f1": a + 0.05, "main": a} for a in (0.70, 0.72, 0.71)], 408),
        "rte": _task([{"accuracy": a, "main": a} for a in (0.55, 0.58, 0.56)], 277),
        "cola": _task([{"mcc": a, "main": a} for a in (0.10, 0.15, 0.12)], 1043),
        "stsb": _task([{"pearson": a + 0.01, "spearman": a, "main": a} for a in (0.60, 0.64, 0.62)], 1500),
        "qnli": {"skipped": "no train split in data/glue/QNLI"},
    }
    scored = ["cola", "sst2", "mrpc", "stsb", "rte"]
    glue["score"] = float(np.mean([glue[t]["main"] for t in scored]))
    glue["score_tasks"] = scored
    qa = _task([{"exact_match": e, "f1": e + 0.1, "main": e + 0.1, "count": 300} for e in (0.30, 0.32, 0.31)], 300)
    qa["dev"] = "25% of the articles of xquad.en.json held out"
    ner = _task([{"precision": p, "recall": p - 0.1, "f1": p - 0.05, "token_accuracy": 0.9, "main": p - 0.05}
                 for p in (0.40, 0.42, 0.41)], 1009)
    return {"glue": glue, "qa": qa, "ner": ner, "bias": _bias_section()}


@pytest.fixture(scope="module")
def params() -> dict:
    return load_params(ROOT / "params.yaml").model_dump(mode="json")


@pytest.fixture(scope="module")
def licenses_md() -> str:
    return (DATA / "LICENSES.md").read_text(encoding="utf-8")


GATE = {
    "passed": False, "outcome": "challenger", "compared_to": "3",
    "checks": [
        {"name": "floor glue.sst2.accuracy", "kind": "floor", "metric": "glue.sst2.accuracy", "value": 0.82,
         "threshold": ">= 0.5", "passed": True, "detail": "0.82 >= 0.5"},
        {"name": "non-inferiority cola", "kind": "non_inferiority", "metric": "glue.cola.mcc", "value": -0.041,
         "threshold": "> -0.02", "passed": False, "detail": "paired CI [-0.041, 0.010] | 1043 shared"},
        {"name": "bias drift crows", "kind": "bias_drift", "metric": "bias.crows.generator.metric",
         "value": None, "threshold": "<= 4.1", "passed": True, "detail": "no champion value"},
    ],
}
LINEAGE = {"git_commit": "06ef830abc", "git_dirty": "false", "data_dvc_md5": "d41d8cd98f00b204.dir",
           "params_hash": "ab12", "profile": "tiny", "register_run_id": "run-9", "torch_version": "2.5.0"}
# as register's _dataset_records names them (the digests made up)
DATASETS = [
    {"name": "corpus:pretrain", "digest": "aa11", "source": "data/pretrain", "context": "pretraining"},
    {"name": "vocab", "digest": "ab12", "source": "data/vocab/bert-base-uncased-vocab.txt", "context": "pretraining"},
    {"name": "glue-sst2", "digest": "bb22", "source": "data/glue/SST-2", "context": "finetuning"},
    {"name": "glue-mrpc", "digest": "cc33", "source": "data/glue/MRPC", "context": "finetuning"},
    {"name": "qa", "digest": "dd44", "source": "data/qa/xquad/xquad.en.json", "context": "finetuning"},
    {"name": "ner-train", "digest": "ee55", "source": "data/ner/wnut17/wnut17train.conll", "context": "finetuning"},
    {"name": "ner-dev", "digest": "ef56", "source": "data/ner/wnut17/emerging.dev.conll", "context": "evaluation"},
    {"name": "crows-pairs", "digest": "ff66", "source": "data/bias/crows_pairs/crows_pairs_anonymized.csv",
     "context": "bias"},
    {"name": "eec", "digest": "0a77", "source": "data/bias/eec/Equity-Evaluation-Corpus.csv", "context": "bias"},
]


def _card(metrics, params, licenses_md, **kw) -> str:
    args = {"model_name": "electra-discriminator", "version": "4", "kind": "discriminator", "task": None,
            "metrics": metrics, "gate": GATE, "lineage": LINEAGE, "params": params,
            "licenses_md": licenses_md, "datasets": DATASETS}
    args.update(kw)
    return render_model_card(**args)


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n", 2)[1])


def _results(meta: dict) -> dict[str, dict[str, float]]:
    """model-index results as {dataset config or type: {metric type: value}}."""
    out = {}
    for result in meta["model-index"][0]["results"]:
        dataset = result["dataset"]
        out[dataset.get("config", dataset["type"])] = {m["type"]: m["value"] for m in result["metrics"]}
    return out


def test_front_matter_parses_and_holds_every_task_in_percent(metrics, params, licenses_md):
    meta = _front_matter(_card(metrics, params, licenses_md))
    assert meta["language"] == "en" and meta["library_name"] == "transformers"
    assert meta["license"] == "other" and meta["license_link"] == "data/LICENSES.md"
    assert meta["model-index"][0]["name"] == "electra-discriminator"
    results = _results(meta)
    # every evaluated task, none for the skipped qnli
    assert set(results) == {"sst2", "mrpc", "rte", "cola", "stsb", "xquad.en", "leondz/wnut_17"}
    glue = metrics["glue"]
    assert results["sst2"]["accuracy"] == pytest.approx(100 * glue["sst2"]["accuracy"], abs=0.005)
    assert results["mrpc"]["f1"] == pytest.approx(100 * glue["mrpc"]["f1"], abs=0.005)
    assert results["cola"]["matthews_correlation"] == pytest.approx(100 * glue["cola"]["mcc"], abs=0.005)
    assert results["stsb"]["spearmanr"] == pytest.approx(100 * glue["stsb"]["spearman"], abs=0.005)
    assert results["xquad.en"]["exact_match"] == pytest.approx(100 * metrics["qa"]["exact_match"], abs=0.005)
    assert results["leondz/wnut_17"]["recall"] == pytest.approx(100 * metrics["ner"]["recall"], abs=0.005)
    # the metadata's training datasets: the discriminator saw only the pretraining corpus
    assert meta["datasets"] == ["corpus:pretrain", "vocab"]


def test_benchmark_table_has_intervals_seeds_and_reference_rows(metrics, params, licenses_md):
    card = _card(metrics, params, licenses_md)
    sst2 = next(line for line in card.splitlines() if line.startswith("| GLUE SST-2 |"))
    section = metrics["glue"]["sst2"]
    low, high = (f"{100 * v:.1f}" for v in section["main_ci"])
    assert f"{100 * section['main']:.1f} [{low}, {high}; seeds 81.0–83.0]" in sst2
    assert "88.3" in sst2 and "91.2" in sst2                  # the two published reference rows
    assert "(seed 1234)" in sst2                              # the registered model's own score
    assert "compare shapes, not levels" in card
    assert "not trained (no train split in data/glue/QNLI)" in card
    assert "GLUE score (cola, sst2, mrpc, stsb, rte)" in card
    assert "held out" in card                                 # QA's dev-set note
    assert "near chance" in card                              # tiny profile


def test_bias_tables_and_caveats_for_the_discriminator(metrics, params, licenses_md):
    card = _card(metrics, params, licenses_md)
    assert "### CrowS-Pairs" in card and "### StereoSet" in card and "### Equity Evaluation Corpus" in card
    assert "| generator | all (" in card and "| discriminator | all (" in card
    crows = metrics["bias"]["crows"]["discriminator"]
    assert f"{crows['metric']:.1f} [{crows['ci95_low']:.1f}, {crows['ci95_high']:.1f}]" in card
    assert "Blodgett" in card                                 # CrowS-Pairs noise
    # the scorer's description holds a "|" ("log P(token | ...)"): escaped, the row keeps its 4 cells
    generator_all = next(line for line in card.splitlines() if line.startswith("| generator | all (pseudo"))
    assert len(re.split(r"(?<!\\)\|", generator_all.strip("|"))) == 4
    assert "do not reliably agree" in card                    # intrinsic vs extrinsic


def test_licence_lines_quoted_and_research_use_named(metrics, params, licenses_md):
    card = _card(metrics, params, licenses_md)
    for row in licenses_md.splitlines():
        # every dataset this card draws on has its LICENSES.md line, verbatim
        if any(key in row for key in ("`glue/SST-2/`", "`glue/CoLA/`", "`bias/eec/`", "`pretrain/wikitext-2-raw/`",
                                      "`qa/xquad/`", "`ner/wnut17/`", "`vocab/`")):
            assert row in card
    research = next(line for line in card.splitlines() if line.startswith("**Research use only.**"))
    for name in ("GLUE CoLA", "GLUE SST-2", "GLUE MRPC", "GLUE RTE", "Equity Evaluation Corpus"):
        assert name in research
    assert "WNUT-17" not in research                          # open (CC BY 4.0): not flagged
    # LICENSES.md's own warning on flagged data, quoted
    assert any(line.startswith("> ") and "**Flagged** entries are not under an open licence" in line
               for line in card.splitlines())


def test_no_licences_file_says_unknown(metrics, params):
    card = _card(metrics, params, None)
    assert "**Licences unknown**" in card
    assert "Research use only" not in card


def test_gate_rows_show_pass_and_fail(metrics, params, licenses_md):
    card = _card(metrics, params, licenses_md)
    assert "**Gate failed** (2 of 3 checks passed): kept as `challenger`" in card
    assert "Compared with champion version 3." in card
    rows = {line.split(" | ")[0].lstrip("| "): line for line in card.splitlines() if line.startswith("| ")}
    assert rows["non-inferiority cola"].endswith("| FAIL | paired CI [-0.041, 0.010] \\| 1043 shared |")
    assert "| pass |" in rows["floor glue.sst2.accuracy"]
    assert "| – |" in rows["bias drift crows"]                  # a None value
    assert "| git_commit | `06ef830abc` |" in card             # lineage table


def test_task_card_lists_only_its_task(metrics, params, licenses_md):
    card = _card(metrics, params, licenses_md, model_name="electra-sst2", kind="glue", task="sst2",
                 gate={**GATE, "passed": True, "outcome": "champion", "checks": GATE["checks"][:1]})
    meta = _front_matter(card)
    assert _results(meta) == {"sst2": {"accuracy": pytest.approx(100 * metrics["glue"]["sst2"]["accuracy"],
                                                                abs=0.005)}}
    assert meta["pipeline_tag"] == "text-classification"
    assert meta["datasets"] == ["corpus:pretrain", "vocab", "glue-sst2"]
    assert "| bias | eec |" in card and "crows-pairs" not in card   # EEC is the one bias set it meets
    # benchmark rows (licence rows also start with "| GLUE", but name their folder)
    table_rows = [line for line in card.splitlines() if line.startswith("| GLUE ") and "(`" not in line]
    assert [r.split(" | ")[0] for r in table_rows] == ["| GLUE SST-2"]
    assert "GLUE score" not in card
    # bias: EEC only, and where the intrinsic scores are
    assert "### Equity Evaluation Corpus" in card and "CrowS-Pairs (%" not in card
    assert "see the model card of `electra-discriminator`" in card
    # licences: its own data, not the other tasks'
    assert "`glue/SST-2/`" in card and "`glue/MRPC/`" not in card and "`bias/eec/`" in card
    assert "**Gate passed** (1 of 1 checks passed): promoted to `champion`" in card


def test_other_task_cards_point_to_the_discriminator(metrics, params, licenses_md):
    qa = _card(metrics, params, licenses_md, model_name="electra-qa", kind="qa", task=None)
    assert set(_results(_front_matter(qa))) == {"xquad.en"}
    assert "No bias benchmark scores this task's outputs." in qa
    ner = _card(metrics, params, licenses_md, model_name="electra-ner", kind="ner", task="ner")
    assert _front_matter(ner)["pipeline_tag"] == "token-classification"
    assert "`ner/wnut17/`" in ner and "`glue/SST-2/`" not in ner
    assert _front_matter(ner)["datasets"] == ["corpus:pretrain", "vocab", "ner-train"]
    assert "| evaluation | ner-dev |" in ner and "glue-sst2" not in ner


def test_missing_bias_skipped_task_and_none_values_render(metrics, params, licenses_md):
    sparse = copy.deepcopy(metrics)
    del sparse["bias"]
    sparse["glue"]["rte"]["accuracy"] = None                  # a None metric
    sparse["glue"]["rte"]["main_ci"] = None
    sparse["glue"]["cola"] = {"mcc": 0.1, "main": 0.1}        # a hand-made section: no CI, no spread
    card = _card(sparse, params, licenses_md)
    meta = _front_matter(card)
    assert "accuracy" not in _results(meta).get("rte", {})
    assert "this version's bias is unmeasured" in card
    assert "| GLUE CoLA | Matthews correlation | 10.0 |" in card
    sst2 = _card(sparse, params, licenses_md, model_name="electra-sst2", kind="glue", task="sst2")
    assert "EEC) was not run for this version" in sst2


def test_empty_inputs_still_render():
    card = render_model_card(model_name="m", version="1", kind="discriminator", task=None, metrics={},
                             gate={}, lineage={}, params={}, licenses_md=None, datasets=[])
    meta = _front_matter(card)
    assert meta["model-index"] == [{"name": "m", "results": []}]
    for text in ("No task was fine-tuned or evaluated", "No gate decision", "No lineage was recorded",
                 "No dataset was logged", "**Licences unknown**"):
        assert text in card
    qa = render_model_card(model_name="q", version="1", kind="qa", task=None, metrics={"glue": {"qnli": None}},
                           gate={"passed": None, "checks": []}, lineage={}, params={}, licenses_md="",
                           datasets=[])
    assert "Extractive QA: no result in metrics.json." in qa


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="kind must be one of"):
        render_model_card(model_name="m", version="1", kind="mlm", task=None, metrics={}, gate={},
                          lineage={}, params={}, licenses_md=None, datasets=[])


# --------------------------------------------------------------------------- registry description

LINK = "#/experiments/1/runs/run-9/artifacts/model_cards/electra-sst2/MODEL_CARD.md"
URI = "runs:/run-9/model_cards/electra-sst2/MODEL_CARD.md"


def _description(metrics, params, **kw) -> str:
    args = {"model_name": "electra-discriminator", "version": "4", "kind": "discriminator", "task": None,
            "metrics": metrics, "gate": GATE, "lineage": LINEAGE, "params": params,
            "card_link": LINK, "card_uri": URI}
    args.update(kw)
    return render_description(**args)


def _card_summary(card: str) -> str:
    """The card's first paragraph: the line after its title."""
    body = card.split("---\n", 2)[2].splitlines()
    assert body[0].startswith("# ")
    return body[2]


def test_description_opens_with_the_cards_summary_and_has_no_front_matter(metrics, params, licenses_md):
    sst2 = {"model_name": "electra-sst2", "kind": "glue", "task": "sst2",
            "gate": {**GATE, "passed": True, "outcome": "champion", "checks": GATE["checks"][:1]}}
    text = _description(metrics, params, **sst2)
    card = _card(metrics, params, licenses_md, **sst2)
    assert text.startswith(_card_summary(card) + "\n")
    assert _card_summary(card).startswith("ELECTRA fine-tuned for GLUE SST-2")
    # Nothing the registry UI would render as a heading, a rule or a table; no YAML.
    lines = text.splitlines()
    assert not [line for line in lines if line.startswith(("#", "---", "|", "==="))]
    assert "model-index" not in text and not [line for line in lines if re.match(r"[\w-]+:\s*$", line)]
    assert not [line for line in lines if re.match(r"(language|license|tags|datasets|library_name):", line)]
    # Headline metric with its interval, its bias headline, the gate outcome and the card link.
    low, high = (100 * v for v in metrics["glue"]["sst2"]["main_ci"])
    assert f"- GLUE SST-2, Accuracy: {100 * metrics['glue']['sst2']['main']:.1f} [{low:.1f}, {high:.1f}" in text
    assert "- EEC gender gap" in text and "- CrowS-Pairs" not in text
    assert "**Gate passed** (1 of 1 checks passed): promoted to `champion`" in text
    assert f"[MODEL_CARD.md]({LINK})" in text and URI in text
    assert lines[-1].startswith("**Full model card**")
    # The card itself keeps its front matter.
    assert card.startswith("---\n") and "model-index" in card


def test_description_of_the_discriminator_lists_every_task_bias_and_failed_checks(metrics, params):
    text = _description(metrics, params)
    for title in ("GLUE CoLA, Matthews correlation", "GLUE SST-2, Accuracy", "GLUE STS-B, Spearman correlation",
                  "Extractive QA, F1", "NER (entity-level), F1"):
        assert re.search(rf"- {re.escape(title)}: \d+\.\d \[\d+\.\d, \d+\.\d", text), title
    assert "- GLUE QNLI, Accuracy: not trained" in text
    assert re.search(r"- GLUE score \(mean of the main metrics\): \d+\.\d", text)
    assert re.search(r"- CrowS-Pairs \(generator\).*: \d+\.\d \[\d+\.\d, \d+\.\d\]", text)
    assert "**Gate failed** (2 of 3 checks passed): kept as `challenger` (not promoted). " \
           "Compared with champion version 3." in text
    assert "- non-inferiority cola: paired CI [-0.041, 0.010] \\| 1043 shared" in text
    assert f"Profile `{params['profile']}`: a pipeline demonstration" in text     # tiny: say so
    assert len(text) < 4900


def test_description_of_empty_inputs_and_a_demo_profile():
    text = render_description(model_name="m", version="1", kind="ner", task=None, metrics={}, gate={},
                              lineage={"profile": "micro"}, params={})
    assert text.startswith("ELECTRA fine-tuned for NER (entity-level)")
    assert "- NER (entity-level), F1: not evaluated" in text
    assert "No gate decision was recorded for this version." in text
    assert "Profile `micro`: a pipeline demonstration" in text
    assert "`MODEL_CARD.md`" in text and "](" not in text        # no link without an address
    with pytest.raises(ValueError, match="kind must be one of"):
        render_description(model_name="m", version="1", kind="mlm", task=None, metrics={}, gate={},
                           lineage={}, params={})


def test_the_gain_over_scratch_is_on_the_card_and_in_the_description(metrics, params, licenses_md):
    from electra.tasks.scratch import verdict

    with_gain = copy.deepcopy(metrics)
    sst2 = with_gain["glue"]["sst2"]
    sst2["scratch"] = _task([{"accuracy": a, "main": a} for a in (0.70, 0.72, 0.69)], 872)
    sst2.update({"gain_over_scratch": 0.117, "gain_over_scratch_ci": [0.08, 0.15],
                 "gain_over_scratch_seed_ci": [0.09, 0.14]})
    with_gain["gain_over_scratch"] = {"glue_mean": 0.117, "glue_mean_ci": [0.08, 0.15], "glue_tasks": ["sst2"],
                                      "beat": 1, "of": 1, "verdict": verdict(1, 1, 0.117, [0.08, 0.15])}
    card = _card(with_gain, params, licenses_md)
    assert "## Gain from pretraining over a from-scratch control" in card
    row = next(line for line in card.splitlines() if line.startswith("| sst2 | 82.0 | 70.0 |"))
    assert "+11.7 [+8.0, +15.0]" in row and "+11.7 [+9.0, +14.0]" in row
    assert "| GLUE mean (sst2) |" in card and "Pretraining beat scratch on 1 of 1 tasks" in card
    description = render_description(model_name="electra-discriminator", version="4", kind="discriminator",
                                     task=None, metrics=with_gain, gate=GATE, lineage=LINEAGE, params=params)
    assert "Against a from-scratch control: pretraining beat scratch on 1 of 1 tasks" in description
    # A task model's card: its own task's row, not the discriminator's GLUE mean.
    task_card = _card(with_gain, params, licenses_md, model_name="electra-sst2", kind="glue", task="sst2")
    assert "| sst2 | 82.0 | 70.0 |" in task_card and "GLUE mean" not in task_card
    # Without a control the card says so.
    assert "No scratch control was evaluated" in _card(metrics, params, licenses_md)


def test_task_adaptive_pretraining_text_is_on_the_card(metrics, params, licenses_md):
    """A tsv: source (a task's unlabelled train text in the corpus) is said plainly, and its
    licence line is on the card of every model pretrained on it, the QA model's too."""
    sources = ["data/pretrain", "tsv:data/glue/SST-2/train.tsv?columns=sentence",
               "tsv:data/glue/CoLA/train.tsv?header=none&columns=3"]
    tapt = {**params, "ingest": {**params["ingest"], "sources": sources}}
    datasets = [*DATASETS, {"name": "task-text:SST-2/train.tsv", "digest": "ab99",
                            "source": "data/glue/SST-2/train.tsv", "context": "pretraining"}]
    card = _card(metrics, tapt, licenses_md, model_name="electra-qa", kind="qa", task=None, datasets=datasets)
    assert "Plain English text from `data/pretrain`" in card
    line = next(line for line in card.splitlines() if line.startswith("Task-adaptive pretraining"))
    assert "*train* files `data/glue/SST-2/train.tsv` (`sentence`), `data/glue/CoLA/train.tsv` (column 3)" in line
    assert "never the labels, and never dev or test text" in line
    assert "| pretraining | task-text:SST-2/train.tsv | `ab99` | data/glue/SST-2/train.tsv |" in card
    assert "`glue/SST-2/`" in card and "`glue/CoLA/`" in card and "`glue/MRPC/`" not in card
    assert "GLUE itself" in card    # GLUE's own terms are quoted when its text is in the corpus
    assert "Task-adaptive" not in _card(metrics, params, licenses_md)
