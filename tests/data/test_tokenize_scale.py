"""Tokenize at scale: input shards are units of work, tokenised in parallel and merged in
shard order. The output must not depend on the number of workers, nor on a kill and a
rerun, nor on which units a previous run left in the cache."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from electra.core.config import IngestConfig, TokenizeConfig
from electra.data.ingest import ingest
from electra.data.packed import PackedDataset
from electra.data.tokenize import tokenize
from tests.conftest import ROOT

pytestmark = pytest.mark.data   # reads the datasets in data/

CORPUS = ROOT / "data" / "pretrain" / "inaugural"


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """The inaugural speeches (860 KB) in ~100 KB ingest shards: several units of work."""
    out = tmp_path_factory.mktemp("scale") / "ingest"
    result = ingest(IngestConfig(sources=[str(CORPUS)], output_dir=str(out), shard_size_mb=0.1), progress=False)
    assert len(result["shards"]) >= 6
    return out


def _cfg(shards: Path, out: Path, **kw) -> TokenizeConfig:
    return TokenizeConfig(input_dir=str(shards), output_dir=str(out), max_seq_length=64, **kw)


def _rows(out: Path, split: str) -> np.ndarray:
    data = PackedDataset(out, split)
    return data.get(np.arange(len(data)))[0]


def test_one_and_two_workers_give_the_same_output_and_a_rerun_reuses_every_unit(shards, tmp_path):
    one = tokenize(_cfg(shards, tmp_path / "one", workers=1), progress=False)
    two = tokenize(_cfg(shards, tmp_path / "two", workers=2), progress=False)
    assert one["content_hash"] == two["content_hash"]
    assert one["fill_fraction"] == two["fill_fraction"] >= 0.9    # examples filled to 64 (about 0.8 before)
    assert one["units_reused"] == two["units_reused"] == 0
    assert (_rows(tmp_path / "one", "train") == _rows(tmp_path / "two", "train")).all()
    # The index lists one unit's shards after another's, in the ingest shards' order.
    index = json.loads((tmp_path / "two" / "train" / "index.json").read_text())["shards"]
    assert [e["shard"] for e in index] == sorted(e["shard"] for e in index)
    assert len({e["shard"] for e in index}) >= 6
    again = tokenize(_cfg(shards, tmp_path / "two", workers=2), progress=False)
    assert again["content_hash"] == two["content_hash"]
    assert again["units_reused"] == len(index)


def test_max_examples_keeps_the_first_examples_in_shard_order(shards, tmp_path):
    full = tokenize(_cfg(shards, tmp_path / "full", workers=2), progress=False)
    capped = tokenize(_cfg(shards, tmp_path / "capped", workers=2, max_examples=700), progress=False)
    assert capped["train_examples"] + capped["validation_examples"] == 700
    assert full["train_examples"] > capped["train_examples"]
    # A prefix: the capped run's rows are the full run's first rows of each split.
    for split in ("train", "validation"):
        capped_rows = _rows(tmp_path / "capped", split)
        assert (_rows(tmp_path / "full", split)[: len(capped_rows)] == capped_rows).all()


@pytest.mark.slow
def test_a_run_killed_midway_resumes_with_the_units_it_finished(shards, tmp_path):
    reference = tokenize(_cfg(shards, tmp_path / "reference", workers=1), progress=False)
    out = tmp_path / "killed"
    code = ("import sys; from electra.core.config import TokenizeConfig; from electra.data.tokenize import tokenize; "
            f"tokenize(TokenizeConfig(input_dir={str(shards)!r}, output_dir={str(out)!r}, max_seq_length=64, "
            "workers=1), progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    cache = Path(f"{out}.cache")
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and len(list(cache.glob("unit-*/unit.json"))) < 2:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    finished = len(list(cache.glob("unit-*/unit.json")))
    assert proc.returncode == -signal.SIGKILL and finished >= 2 and not out.exists()
    resumed = tokenize(_cfg(shards, out, workers=2), progress=False)
    assert resumed["content_hash"] == reference["content_hash"]
    assert resumed["units_reused"] == finished
