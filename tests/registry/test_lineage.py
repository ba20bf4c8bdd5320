"""Lineage: the datasets a registered model was built from, as MLflow inputs. A task's train
text added to the corpus (a ``tsv:`` source) is a pretraining input under its file's path."""

from __future__ import annotations

import pytest

from electra.core.config import load_params
from electra.registry.lineage import content_digest, dataset_records
from tests.conftest import DATA, ROOT

pytestmark = pytest.mark.data   # reads the datasets in data/


def test_tsv_sources_are_pretraining_inputs_by_their_file():
    params = load_params(ROOT / "params.yaml")
    sources = ["data/pretrain/inaugural", "tsv:data/glue/SST-2/train.tsv?columns=sentence",
               "tsv:data/glue/CoLA/train.tsv?header=none&columns=3"]
    params = params.model_copy(update={
        "ingest": params.ingest.model_copy(update={"sources": sources}),
        "finetune": params.finetune.model_copy(update={"tasks": ["sst2"]})})
    records = {r["name"]: r for r in dataset_records(params)}
    assert records["corpus:inaugural"]["source"] == "data/pretrain/inaugural"
    for name, path in (("task-text:SST-2/train.tsv", DATA / "glue" / "SST-2" / "train.tsv"),
                       ("task-text:CoLA/train.tsv", DATA / "glue" / "CoLA" / "train.tsv")):
        record = records[name]
        assert record["source"] == str(path.relative_to(ROOT)) and record["context"] == "pretraining"
        assert record["digest"] == content_digest(path)
    assert not any(r["source"].startswith("tsv:") for r in records.values())
