"""A task kind added from outside the package runs finetune -> evaluate -> gate unchanged.

The kind here ("toy": one sentence, a binary label, read from a two-column TSV written in
tmp_path) is one class and one ``register_task`` call; nothing in ``electra`` is edited.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import torch

from electra.core import config as config_module
from electra.core.config import GateConfig, TaskEntry
from electra.core.stats import accuracy
from electra.tasks import base
from electra.tasks.common import CardInfo, ServingSpec, TaskBase
from electra.tasks.glue import Example
from electra.tasks.glue_task import collate, encode, predict
from electra.tasks.recipe import pad_id, save_finetuned, seed_everything, subsample, train_loop
from tests.conftest import micro_params

WORDS = {1: ["good", "great", "lovely", "fine", "superb"], 0: ["bad", "awful", "poor", "dull", "grim"]}


class ToyEntry(TaskEntry):
    """A folder with ``train.tsv`` and ``dev.tsv``: ``text<TAB>label`` rows, no header."""

    kind: Literal["toy"] = "toy"


class ToyTask(TaskBase):
    kind = "toy"
    entry_class = ToyEntry
    group = None

    def read(self, split: str) -> list[Example]:
        with open(Path(self.entry.data) / f"{split}.tsv", encoding="utf-8", newline="") as handle:
            return [Example(text_a=text, text_b=None, label=int(label), line=i)
                    for i, (text, label) in enumerate(csv.reader(handle, delimiter="\t"), 1)]

    def dev_split(self) -> tuple[list, str | None]:
        return self.read("dev"), "dev.tsv of the toy folder"

    def finetune_seed(self, seed: int, run_dir: Path, logger, progress: bool, device) -> dict[str, Any]:
        from transformers import AutoTokenizer, ElectraForSequenceClassification

        cfg, settings, started = self.cfg, self.settings(), time.perf_counter()
        seed_everything(seed)
        train = subsample(self.read("train"), settings["max_train_examples"], cfg.seed)
        tokenizer = AutoTokenizer.from_pretrained(cfg.model_dir)
        features = encode(tokenizer, train, settings["max_seq_length"])
        labels = torch.tensor([ex.label for ex in train], dtype=torch.long)
        model = ElectraForSequenceClassification.from_pretrained(cfg.model_dir, num_labels=2).to(device)
        trained = train_loop(
            model, [len(f["input_ids"]) for f in features],
            lambda idx: {**collate([features[i] for i in idx], pad_id(tokenizer)), "labels": labels[idx]},
            lr=settings["lr"], layer_decay=cfg.layer_decay, weight_decay=cfg.weight_decay, adam_eps=cfg.adam_eps,
            epochs=settings["epochs"], batch_size=settings["batch_size"], warmup_fraction=cfg.warmup_fraction,
            seed=seed, device=device, logger=logger, name=self.name)
        model_dir = save_finetuned(model, tokenizer, run_dir / "model")
        return {"model_dir": str(model_dir), "train_loss": trained["train_loss"], "curve": trained["curve"],
                "seconds": time.perf_counter() - started, "max_seq_length": settings["max_seq_length"]}

    def evaluate_run(self, run, examples, batch_size, device, seed):
        logits = predict(run["model_dir"], examples, batch_size, run["max_seq_length"], device)
        rows = [{"line": ex.line, "label": int(ex.label), "prediction": int(p)}
                for ex, p in zip(examples, logits.argmax(axis=1), strict=True)]
        main = self.statistic(rows)(np.arange(len(rows)))
        return self.with_interval({"accuracy": main, "main": main}, rows, seed), rows

    def statistic(self, rows: Sequence[dict[str, Any]]) -> Callable[[np.ndarray], float]:
        gold = np.asarray([r["label"] for r in rows])
        pred = np.asarray([r["prediction"] for r in rows])
        return lambda idx: accuracy(gold[idx], pred[idx])

    def row_key(self, row):
        return str(row["line"])

    def row_gold(self, row):
        return row["label"]

    def serving(self, summary):
        return ServingSpec(entry="classifier_model.py", settings={"pair": False}, input_columns=(None,),
                           input_example=["good"], output_example={"label": ["1"], "score": [0.9]})

    def datasets(self):
        return [("toy", self.entry.data, "finetuning")]

    def card_info(self):
        return CardInfo(title="Toy sentiment", use="toy sentiment", hf_task=("text-classification", "Text"),
                        dataset={"name": "toy", "type": "toy", "split": "validation"}, metrics=["accuracy"],
                        main="accuracy", paths=[self.entry.data])


def _write_split(path: Path, n: int, rng: np.random.Generator) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t")
        for _ in range(n):
            label = int(rng.integers(0, 2))
            words = rng.choice(WORDS[label], size=3)
            writer.writerow([f"a {' '.join(words)} film", label])


@pytest.fixture
def toy_kind(tmp_path):
    """The toy kind registered (with a default entry, so ``finetune.tasks=[toy]`` selects it),
    and every registry put back afterwards."""
    saved = (dict(base._KINDS), dict(config_module.TASK_ENTRIES), dict(config_module.DEFAULT_TASKS))
    folder = tmp_path / "toy-data"
    folder.mkdir()
    rng = np.random.default_rng(0)
    _write_split(folder / "train.tsv", 64, rng)
    _write_split(folder / "dev.tsv", 40, rng)
    base.register_task("toy", ToyTask, defaults={"toy": {"data": str(folder)}})
    yield folder
    for live, before in zip((base._KINDS, config_module.TASK_ENTRIES, config_module.DEFAULT_TASKS), saved,
                            strict=True):
        live.clear()
        live.update(before)


def test_a_registered_kind_runs_through_finetune_evaluate_and_gate(toy_kind, pretrained_micro, tmp_path):
    from electra.evaluation.evaluate import evaluate
    from electra.registry.gate import Evidence, evaluate_gate
    from electra.tasks.finetune import finetune

    params = micro_params(tmp_path, "finetune.tasks=[sst2, toy]", "finetune.catalog.toy={max_train_examples: 48}",
                          f"finetune.model_dir={pretrained_micro}/outputs/pretrain/discriminator")
    assert list(params.finetune.tasks) == ["sst2", "toy"]
    assert params.finetune.catalog["toy"] == ToyEntry(data=str(toy_kind), max_train_examples=48)
    assert params.finetune.task_data("toy") == [str(toy_kind)]

    done = finetune(params.finetune, progress=False)
    assert set(done["tasks"]) == {"sst2", "toy"}
    metrics = evaluate(params.evaluate, params.finetune, progress=False, bias=False)
    toy = metrics["toy"]                     # no group: its own top-level section
    assert 0.0 <= toy["main"] <= 1.0 and toy["main_ci"][0] <= toy["main_ci"][1]
    assert toy["dev_examples"] == 40 and toy["dev"] == "dev.tsv of the toy folder"
    assert metrics["glue"]["score_tasks"] == ["sst2"]
    report = (Path(params.evaluate.output_dir) / "report" / "report.md").read_text()
    assert "## Toy sentiment" in report

    evidence = Evidence.from_evaluate_dir(params.evaluate.output_dir)
    assert set(evidence.predictions) == {"sst2", "toy"}
    cfg = GateConfig(min_metrics={"toy.accuracy": 0.0}, non_inferiority_margin=0.01, resamples=200)
    checks = {c.name: c for c in evaluate_gate(evidence, evidence, cfg, tasks=["toy"], bias_prefixes=())}
    assert checks["floor.toy.accuracy"].passed
    same = checks["non_inferiority.toy"]      # against itself: paired on every dev row, no difference
    assert same.passed and same.value == 0.0 and "40 paired examples" in same.detail
