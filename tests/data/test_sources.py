"""Every source kind through the one ``ingest.sources`` param: compressed files and JSON Lines
give the shards the same text gives as plain files, and broken ones are named."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import shutil
from pathlib import Path

import pytest
import zstandard

from electra.core.config import IngestConfig
from electra.data.ingest import ingest
from tests.conftest import DATA

pytestmark = pytest.mark.data   # reads the datasets in data/

# Three real speeches: small, one document each, no WikiText headings.
SPEECHES = sorted((DATA / "pretrain" / "inaugural").glob("*.txt"))[:3]
COMPRESS = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress,
            ".zst": lambda data: zstandard.ZstdCompressor(level=3).compress(data)}


def _ingest(tmp_path: Path, source: Path, name: str, **extra) -> dict:
    cfg = IngestConfig(sources=[str(source)], output_dir=str(tmp_path / f"out-{name}"), **extra)
    result = ingest(cfg, progress=False)
    result["manifest"] = json.loads((Path(cfg.output_dir) / "manifest.json").read_text())
    return result


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("plain")
    folder = tmp / "corpus"
    folder.mkdir()
    for path in SPEECHES:
        shutil.copy(path, folder / path.name)
    return tmp, _ingest(tmp, folder, "plain")


@pytest.mark.parametrize("suffix", sorted(COMPRESS))
def test_compressed_files_give_the_same_shards_as_plain_ones(plain, tmp_path, suffix):
    _, expected = plain
    folder = tmp_path / "corpus"
    folder.mkdir()
    for path in SPEECHES:
        (folder / (path.name + suffix)).write_bytes(COMPRESS[suffix](path.read_bytes()))
    result = _ingest(tmp_path, folder, suffix)
    assert result["content_hash"] == expected["content_hash"]
    assert result["documents"] == expected["documents"] == len(SPEECHES)
    codec = {".gz": "gzip", ".bz2": "bzip2", ".xz": "xz", ".zst": "zstandard"}[suffix]
    assert {f["compression"] for f in result["manifest"]["files"]} == {codec}


@pytest.mark.parametrize("suffix", ["", ".gz", ".zst"])
def test_json_lines_records_are_documents(plain, tmp_path, suffix):
    """One record per speech (its text in a nested field) gives the plain files' shards."""
    _, expected = plain
    lines = [json.dumps({"id": path.stem, "meta": {"body": path.read_text(encoding="utf-8")}})
             for path in SPEECHES]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    path = tmp_path / f"speeches.jsonl{suffix}"
    path.write_bytes(COMPRESS[suffix](data) if suffix else data)
    result = _ingest(tmp_path, path, "jsonl", jsonl_text_field="meta.body")
    assert result["content_hash"] == expected["content_hash"]
    assert result["documents"] == len(SPEECHES) and result["files_kept"] == 1


def test_a_corrupt_compressed_file_is_skipped_with_the_reason(plain, tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    shutil.copy(SPEECHES[0], folder / SPEECHES[0].name)
    good = gzip.compress(SPEECHES[1].read_bytes())
    (folder / "truncated.txt.gz").write_bytes(good[: len(good) // 2])
    (folder / "not-really.txt.xz").write_bytes(b"plain text pretending to be xz")
    manifest = _ingest(tmp_path, folder, "corrupt")["manifest"]
    reasons = {Path(s["path"]).name: s["reason"] for s in manifest["skipped"]}
    assert reasons["truncated.txt.gz"].startswith("unreadable: corrupt gzip data")
    assert reasons["not-really.txt.xz"].startswith("unreadable: corrupt xz data")
    assert manifest["files_found"] == manifest["files_kept"] + manifest["files_skipped"] == 3


@pytest.mark.parametrize("line, reason", [
    ('{"text": "broken', "not a JSON record"),
    ('{"body": "elsewhere"}', "no field 'text'"),
    ('{"text": 42}', "field 'text' is int, not text"),
])
def test_a_bad_json_lines_record_is_skipped_and_counted_not_fatal(tmp_path, line, reason):
    """One bad record no longer stops the run: it is skipped and counted, with its line, in
    the manifest, and the file gives the shards it gives without that line (1 bad record of
    121 is within ingest.max_bad_record_fraction; tests/data/test_real_world_text.py has more)."""
    good = [json.dumps({"text": f"Record {i} is a document of its own. Its second sentence makes it longer. "
                                f"And a third one makes it long enough to keep."}) for i in range(120)]
    clean, broken = tmp_path / "clean.jsonl", tmp_path / "speeches.jsonl"
    clean.write_text("\n".join(good) + "\n", encoding="utf-8")
    broken.write_text("\n".join(good[:50] + [line] + good[50:]) + "\n", encoding="utf-8")
    expected = _ingest(tmp_path, clean, "clean")
    result = _ingest(tmp_path, broken, "broken")
    assert result["content_hash"] == expected["content_hash"] and result["documents"] == 120
    entry = result["manifest"]["files"][0]
    assert entry["bad_records"] == {"bad": 1, "records": 121, "reasons": {reason: {"count": 1, "lines": [51]}}}
    assert result["manifest"]["bad_records"] == 1


INGEST_CHILD = r"""
import sys
sys.path.insert(0, sys.argv[1])
from electra.core.config import IngestConfig
from electra.data.ingest import ingest
ingest(IngestConfig(sources=[sys.argv[2]], output_dir=sys.argv[3], exclude=[]), progress=False)
"""


def _peak_rss_mib(source: Path, out: Path) -> float:
    """Peak RSS of a fresh process ingesting ``source`` (wait4 reports the child's own)."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    proc = subprocess.Popen([sys.executable, "-c", INGEST_CHILD, str(ROOT), str(source), str(out)])
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0
    return usage.ru_maxrss / 1024


def test_a_large_file_is_read_as_a_stream_not_whole(tmp_path):
    """A 24 MB file of many documents costs about what a small file costs: only one block
    and one document are in memory, not the file (reading it whole costs several times its
    size: bytes, text, normalised text)."""
    body = (SPEECHES[0].read_text(encoding="utf-8").strip() + "\n\n")
    small, large = tmp_path / "small.txt", tmp_path / "large.txt"
    small.write_text(f"= Speech 0 =\n{body}", encoding="utf-8")
    with open(large, "w", encoding="utf-8") as handle:
        written = k = 0
        while written < 24 * 2**20:
            # Distinct documents (a number in every line), WikiText-style headings between them.
            chunk = f"= Speech {k} =\n" + "\n".join(f"{line} {k}" if line else "" for line in body.split("\n"))
            handle.write(chunk)
            written += len(chunk)
            k += 1
    baseline = _peak_rss_mib(small, tmp_path / "out-small")
    peak = _peak_rss_mib(large, tmp_path / "out-large")
    manifest = json.loads((tmp_path / "out-large" / "manifest.json").read_text())
    assert manifest["documents"] == k
    print(f"peak RSS: small file {baseline:.1f} MiB, 24 MB file {peak:.1f} MiB")
    assert peak - baseline < 12, (baseline, peak)   # MiB: well under the file's 24
