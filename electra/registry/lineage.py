"""Where a registered model came from: the DVC pointers it was built under and the
datasets it was built from, each with the content hash DVC gives it.

:func:`dataset_records` lists the corpus, the vocabulary, each selected task's data (as
its kind names it: :meth:`~electra.tasks.base.Task.datasets`) and the bias benchmarks;
:func:`log_datasets` logs them as MLflow inputs.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import mlflow
import yaml

from electra.core.config import Params
from electra.data.sources import TSV_PREFIX, parse_tsv_source
from electra.tasks.base import task_for


def data_pointer_hash(path: str | Path = "data.dvc") -> str:
    """The md5 that ``data.dvc`` pins for ``data/`` ("unknown" when there is no pointer)."""
    p = Path(path)
    if not p.exists():
        return "unknown"
    try:
        outs = yaml.safe_load(p.read_text()).get("outs", [])
        return str(outs[0].get("md5", "unknown"))
    except (yaml.YAMLError, AttributeError, IndexError) as exc:
        raise ValueError(f"{p}: not a valid DVC pointer file: {exc}") from None


def dvc_lock_hashes(path: str | Path = "dvc.lock") -> dict[str, str]:
    """Output hashes per stage from ``dvc.lock`` (empty when the pipeline ran outside DVC).

    Keys are ``stage:path``, with a foreach stage's ``@`` written ``.`` (``finetune.sst2``):
    MLflow tag and param names cannot hold ``@``.
    """
    p = Path(path)
    if not p.exists():
        return {}
    lock = yaml.safe_load(p.read_text()) or {}
    hashes = {}
    for stage, entry in (lock.get("stages") or {}).items():
        for out in entry.get("outs", []) or []:
            key = re.sub(r"[^\w\-. :/]", ".", f"{stage}:{out['path']}")
            hashes[key] = out.get("md5", "")
    return hashes


def _md5_file(path: Path) -> str:
    digest = hashlib.md5()  # DVC's content hash, not a security measure
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_digest(path: str | Path) -> str:
    """DVC's hash of a file (the md5 of its bytes); for a folder, the md5 of its files' listing.

    The listing is ``relpath md5`` lines in path order, so a folder's digest changes
    exactly when one of its files (as DVC hashes them) is added, removed or edited.
    """
    p = Path(path)
    if p.is_file():
        return _md5_file(p)
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: dataset path does not exist")
    listing = "".join(f"{f.relative_to(p).as_posix()} {_md5_file(f)}\n"
                      for f in sorted(p.rglob("*")) if f.is_file())
    return hashlib.md5(listing.encode()).hexdigest()


def dataset_records(params: Params) -> list[dict[str, str]]:
    """The datasets a registered model was built from: name, digest, source and role.

    The corpus (every ``ingest.sources`` entry that is a path; a task's ``tsv:`` train file,
    added for task-adaptive pretraining, as ``task-text:<task folder>/<file>``), the task
    data of ``finetune.tasks`` and the bias benchmarks; paths that do not exist (a task that
    was not run, a hub source) are left out.
    """
    ft, ev = params.finetune, params.evaluate
    candidates: list[tuple[str, str, str]] = [_corpus_entry(src) for src in params.ingest.sources]
    candidates.append(("vocab", params.tokenize.vocab_file, "pretraining"))
    for task in ft.tasks:
        candidates += task_for(ft, task).datasets()
    bias = Path(ev.data_dir) / "bias"
    candidates += [("crows-pairs", str(bias / "crows_pairs" / "crows_pairs_anonymized.csv"), "bias"),
                   ("stereoset", str(bias / "stereoset" / "stereoset_dev_flat.jsonl"), "bias"),
                   ("eec", str(bias / "eec" / "Equity-Evaluation-Corpus.csv"), "bias")]
    records = []
    for name, path, role in candidates:
        if path and Path(path).exists():
            records.append({"name": name, "digest": content_digest(path), "source": str(path), "context": role})
    return records


def _corpus_entry(source: str) -> tuple[str, str, str]:
    """(name, path, role) of one ``ingest.sources`` entry: its path without a ``tsv:`` prefix and query."""
    if source.startswith(TSV_PREFIX):
        path = parse_tsv_source(source).path
        return f"task-text:{path.parent.name}/{path.name}", str(path), "pretraining"
    return f"corpus:{Path(source).name}", source, "pretraining"


def log_datasets(records: list[dict[str, str]], data_pointer: str) -> None:
    """``mlflow.log_input`` for each dataset, its digest the DVC content hash, its source the path."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource

    for record in records:
        dataset = MetaDataset(LocalArtifactDatasetSource(record["source"]), name=record["name"],
                              digest=record["digest"])
        mlflow.log_input(dataset, context=record["context"], tags={"dvc.data_md5": data_pointer})
