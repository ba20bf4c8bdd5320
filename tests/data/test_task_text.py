"""Task-adaptive pretraining: a ``tsv:`` source adds the unlabelled train text of a fine-tuning
task to the corpus. The text of the named columns lands in the shards, the manifest records
each file, a dev or test file is refused, a missing column is named, rows with too few
columns are bad records, and a changed ``columns=`` reads the file again."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from electra.core.config import IngestConfig, load_params
from electra.core.files import sha256_file
from electra.data.ingest import ingest
from electra.data.shards import read_shards
from electra.data.sources import (
    TSV_ROWS_PER_DOCUMENT,
    IngestError,
    held_out_word,
    local_path,
    parse_tsv_source,
)
from electra.data.text import normalize_text, split_sentences
from tests.conftest import DATA, ROOT, require_data

SST2 = DATA / "glue" / "SST-2"
COLA = DATA / "glue" / "CoLA"


def _ingest(tmp_path: Path, sources: list[str], name: str = "out", **extra) -> tuple[dict, dict]:
    cfg = IngestConfig(sources=sources, output_dir=str(tmp_path / name), workers=1, **extra)
    result = ingest(cfg, progress=False)
    return result, json.loads((Path(cfg.output_dir) / "manifest.json").read_text())


def _shard_sentences(result: dict) -> list[str]:
    return [s for document in read_shards(result["output_dir"]) for s in document]


def _sentences(cells: list[str]) -> list[str]:
    """What ingest makes of cells: each normalised and split into sentences (min 2 characters)."""
    return [s for cell in cells if (text := normalize_text(cell).strip())
            for s in split_sentences(text) if len(s) >= 2]


@pytest.mark.data
def test_sst2_train_text_lands_in_the_shards_and_the_manifest_records_it(tmp_path):
    require_data()
    train = SST2 / "train.tsv"
    with open(train, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    column = rows[0].index("sentence")
    result, manifest = _ingest(tmp_path, [f"tsv:{train}?columns=sentence"])

    # 1. Every row's text, in file order; the labels nowhere (a line is a sentence, never "0" or "1").
    assert _shard_sentences(result) == _sentences([r[column] for r in rows[1:]])
    # 67,349 rows: 1,346 documents of 50 rows, the last 49 rows their own document.
    assert result["documents"] == -(-(len(rows) - 1) // TSV_ROWS_PER_DOCUMENT) == 1347

    # 2. The manifest's task_text entry: path, columns, rows read, what was kept, the content hash.
    [entry] = manifest["task_text"]
    assert entry["path"] == str(train) and entry["columns"] == ["sentence"] and entry["header"] is True
    assert entry["rows"] == len(rows) - 1 and entry["bad_rows"] == 0 and entry["split"] == "train"
    assert entry["documents"] == result["documents"] and entry["sentences"] == result["sentences"]
    assert entry["sha256"] == sha256_file(train)
    assert manifest["files"][0]["path"] == str(train)


@pytest.mark.data
def test_a_header_less_file_takes_column_numbers(tmp_path):
    """GLUE CoLA's train.tsv has no header: source, label, original label, sentence."""
    require_data()
    train = COLA / "train.tsv"
    rows = [line.rstrip("\n").split("\t") for line in train.read_text(encoding="utf-8").splitlines()]
    result, manifest = _ingest(tmp_path, [f"tsv:{train}?header=none&columns=3", "data/pretrain/inaugural"])
    cola = _sentences([r[3] for r in rows])
    sentences = _shard_sentences(result)
    assert sentences[-len(cola):] == cola            # the speeches, then the tsv: source (sorted by name)
    assert not {r[0] for r in rows} & set(sentences)  # the source codes (gj04 ...) are not text
    [entry] = manifest["task_text"]
    assert entry["columns"] == [3] and entry["header"] is False and entry["rows"] == len(rows)
    # 8,551 rows: the last row joins the document before it (alone it would be too short to keep).
    assert entry["documents"] == len(rows) // TSV_ROWS_PER_DOCUMENT == 171
    assert manifest["per_source"]["data/pretrain/inaugural"]["documents"] > 0


@pytest.mark.data
@pytest.mark.parametrize("split", ["dev.tsv", "test.tsv"])
def test_dev_and_test_files_are_refused(tmp_path, split):
    require_data()
    source = f"tsv:{SST2 / split}?columns=sentence"
    with pytest.raises(IngestError) as err:
        _ingest(tmp_path, ["data/pretrain/inaugural", source])
    message = str(err.value)
    assert source in message and "train text only" in message
    assert "Don't Stop Pretraining" in message and "leaks into the evaluation" in message
    assert not (tmp_path / "out").exists()           # refused before any work


@pytest.mark.parametrize("name, word", [
    ("dev.tsv", "dev"), ("dev_matched.tsv", "dev"), ("dev_mismatched.tsv", "dev"), ("test_matched.tsv", "test"),
    ("validation.tsv", "validation"), ("val.tsv.gz", "val"), ("eval-set.tsv", "eval"), ("SST-2-test.tsv", "test"),
    ("train.tsv", None), ("train_full.tsv.gz", None), ("devices.tsv", None), ("contest.tsv", None),
])
def test_held_out_file_names(name, word):
    assert held_out_word(Path("glue/MNLI") / name) == word


def test_malformed_tsv_sources_are_named():
    for source, problem in [("tsv:x/train.tsv", "no columns="), ("tsv:x/train.tsv?columns=a&sep=,", "unknown option"),
                            ("tsv:x/train.tsv?header=none&columns=text", "0-based column numbers"),
                            ("tsv:x/train.tsv?header=yes&columns=a", "header='yes'")]:
        with pytest.raises(IngestError, match="tsv:x/train.tsv") as err:
            parse_tsv_source(source)
        assert problem in str(err.value)
    spec = parse_tsv_source("tsv:glue/MRPC/train.tsv?columns=#1 String,#2 String")
    assert spec.columns == ("#1 String", "#2 String") and spec.path == Path("glue/MRPC/train.tsv")
    assert local_path(spec.source) == "glue/MRPC/train.tsv"


def _write_tsv(path: Path, rows: list[list[str]]) -> Path:
    path.write_text("".join("\t".join(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _rows(n: int) -> list[list[str]]:
    """Rows of two text columns, each cell a distinct sentence long enough to keep."""
    return [[f"Premise number {i} says the cat sat on the mat.", f"Hypothesis number {i} says a dog ran away.",
             str(i % 2)] for i in range(n)]


def test_a_missing_column_names_the_file_and_its_columns(tmp_path):
    train = _write_tsv(tmp_path / "train.tsv", [["premise", "hypothesis", "label"], *_rows(3)])
    with pytest.raises(IngestError) as err:
        _ingest(tmp_path, [f"tsv:{train}?columns=premise,sentence"])
    message = str(err.value)
    assert str(train) in message and "['sentence']" in message
    assert "['premise', 'hypothesis', 'label']" in message


def test_rows_with_too_few_columns_are_bad_records(tmp_path):
    rows = _rows(200)
    rows[10], rows[20] = ["a lone cell"], ["another"]
    train = _write_tsv(tmp_path / "train.tsv", [["premise", "hypothesis", "label"], *rows])
    source = f"tsv:{train}?columns=hypothesis"
    result, manifest = _ingest(tmp_path, [source], max_bad_record_fraction=0.05)
    [entry] = manifest["task_text"]
    assert entry["rows"] == 200 and entry["bad_rows"] == 2
    reasons = manifest["files"][0]["bad_records"]["reasons"]
    assert reasons == {"fewer than 2 tab-separated columns": {"count": 2, "lines": [12, 22]}}
    assert result["sentences"] == 198
    # Past max_bad_record_fraction the whole file is skipped, with the reason (here: nothing left).
    with pytest.raises(IngestError, match="no usable text"):
        _ingest(tmp_path, [source], name="strict", max_bad_record_fraction=0.005)


def test_a_changed_column_reads_the_file_again(tmp_path):
    train = _write_tsv(tmp_path / "train.tsv", [["premise", "hypothesis", "label"], *_rows(120)])
    first, _ = _ingest(tmp_path, [f"tsv:{train}?columns=premise"])
    assert all(s.startswith("Premise") for s in _shard_sentences(first))
    second, _ = _ingest(tmp_path, [f"tsv:{train}?columns=hypothesis"])
    assert second["files_from_cache"] == 0
    assert all(s.startswith("Hypothesis") for s in _shard_sentences(second))
    both, manifest = _ingest(tmp_path, [f"tsv:{train}?columns=premise,hypothesis"])
    assert both["files_from_cache"] == 0 and both["sentences"] == 240
    assert _shard_sentences(both)[:2] == [_rows(1)[0][0], _rows(1)[0][1]]   # a row's cells in column order
    again, _ = _ingest(tmp_path, [f"tsv:{train}?columns=premise,hypothesis"])
    assert again["files_from_cache"] == 1 and again["content_hash"] == both["content_hash"]


def test_the_skip_fingerprint_hashes_the_file(tmp_path):
    """The pipeline's skip decision hashes a tsv: source's file (its columns are in the params)."""
    from electra.pipeline.table import get_stage

    params = load_params(ROOT / "params.yaml")
    sources = ["data/pretrain/inaugural", f"tsv:{SST2 / 'train.tsv'}?columns=sentence"]
    params = params.model_copy(update={"ingest": params.ingest.model_copy(update={"sources": sources})})
    assert str(SST2 / "train.tsv") in get_stage("ingest").inputs(params, None)
