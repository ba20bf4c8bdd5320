"""Ingest at scale: files are units of work, run in parallel into a cache keyed by content,
and assembled in order. Adding files processes only those; the output is a fresh run's."""

from __future__ import annotations

import json
import shutil

from electra.core.config import IngestConfig
from electra.data.dedup import NearDuplicates
from electra.data.ingest import ingest
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.data   # reads the datasets in data/

SPEECHES = sorted((ROOT / "data" / "pretrain" / "inaugural").glob("*.txt"))


def _cfg(corpus, out, **kw) -> IngestConfig:
    return IngestConfig(sources=[str(corpus)], output_dir=str(out), **kw)


def _manifest(out) -> dict:
    return json.loads((out / "manifest.json").read_text())


def test_adding_files_processes_only_them_and_gives_a_fresh_runs_output(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for speech in SPEECHES[:10]:
        shutil.copy(speech, corpus)
    first = ingest(_cfg(corpus, tmp_path / "out", workers=2), progress=False)
    assert first["files_from_cache"] == 0
    for speech in SPEECHES[10:13]:
        shutil.copy(speech, corpus)
    (corpus / SPEECHES[0].name).write_text(SPEECHES[0].read_text() + "\nA sentence added to the first speech.\n")
    grown = ingest(_cfg(corpus, tmp_path / "out", workers=2), progress=False)
    run = _manifest(tmp_path / "out")["run"]
    # Three new files and one edited: four read; the other nine come from the cache.
    assert (run["files_processed"], run["files_from_cache"]) == (4, 9)
    fresh = ingest(_cfg(corpus, tmp_path / "fresh", workers=1), progress=False)
    assert grown["content_hash"] == fresh["content_hash"] != first["content_hash"]
    assert _manifest(tmp_path / "fresh")["run"]["files_from_cache"] == 0
    # Each input's hash is in the manifest; the cache holds only the current files' entries.
    assert all(len(f["sha256"]) == 64 for f in _manifest(tmp_path / "out")["files"])
    assert len(list((tmp_path / "out.cache").glob("file-*.json"))) == 13
    # Without the cache nothing is kept beside the output, and the output is the same.
    plain = ingest(_cfg(corpus, tmp_path / "plain", cache=False), progress=False)
    assert plain["content_hash"] == fresh["content_hash"]
    assert not list((tmp_path / "plain.cache").iterdir())


def test_a_hugging_face_dataset_streams_to_the_same_shards_as_the_same_records_in_json_lines(tmp_path):
    import datasets

    texts = [speech.read_text(encoding="utf-8") for speech in SPEECHES[:6]]
    folder = tmp_path / "hub-style"
    folder.mkdir()
    datasets.Dataset.from_dict({"text": texts, "year": list(range(6))}).to_parquet(str(folder / "train.parquet"))
    (tmp_path / "records.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    from_hub = ingest(_cfg(f"hf:{folder}?split=train", tmp_path / "hf"), progress=False)
    from_jsonl = ingest(_cfg(tmp_path / "records.jsonl", tmp_path / "jsonl"), progress=False)
    assert from_hub["content_hash"] == from_jsonl["content_hash"]
    assert from_hub["documents"] == 6
    # Read every run (no content hash to key a stream by), so nothing of it stays in the cache.
    assert not list((tmp_path / "hf.cache").iterdir())


def test_near_duplicates_are_dropped_only_when_asked(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    original = SPEECHES[20].read_text(encoding="utf-8")
    # A copy with one word changed: not an exact duplicate, a near one.
    edited = original.replace(" the ", " a ", 1)
    assert edited != original
    (corpus / "a.txt").write_text(original)
    (corpus / "b.txt").write_text(edited)
    shutil.copy(SPEECHES[21], corpus / "c.txt")
    exact_only = ingest(_cfg(corpus, tmp_path / "exact"), progress=False)
    near = ingest(_cfg(corpus, tmp_path / "near", near_dedup=True), progress=False)
    assert exact_only["documents"] == 3 and near["documents"] == 2
    manifest = _manifest(tmp_path / "near")
    assert manifest["near_duplicate_documents"] == 1
    assert [f["documents"] for f in manifest["files"]] == [1, 0, 1]


def test_minhash_bands_put_the_step_at_the_threshold_and_catch_close_pairs_only():
    finder = NearDuplicates(threshold=0.8, permutations=128)
    assert finder.bands * finder.rows <= 128
    assert abs((1 / finder.bands) ** (1 / finder.rows) - 0.8) < 0.01
    words = SPEECHES[5].read_text(encoding="utf-8").split()[:400]
    assert not finder.is_duplicate([" ".join(words)])
    close = words[:]
    close[200] = "changed"
    assert finder.is_duplicate([" ".join(close)])          # Jaccard about 0.98
    assert not finder.is_duplicate([" ".join(words[:150])])  # a third of it: Jaccard about 0.37
