"""Stage ``tokenize``: sentence shards in, packed pretraining examples out.

Output layout (``tokenize.output_dir``)::

    tokenizer/                            the WordPiece tokenizer (AutoTokenizer loads it)
    train/index.json                      the split's shards in order: name, rows, input shard
    train/input_ids-UUUUU-PPP.npy ...     (N, max_seq_length) token ids, right-padded with [PAD]
    train/token_type_ids-UUUUU-PPP.npy    (N, max_seq_length) segment ids (0 for A, 1 for B)
    train/lengths-UUUUU-PPP.npy           (N,) real lengths
    validation/...                        the same for the held-out documents
    summary.json                          counts, fill_fraction (real tokens / slots), shapes, dtypes, hashes

``UUUUU`` is the input (ingest) shard, the unit of parallel work, and ``PPP`` the part
of its output (``shard_examples`` rows each). The ``.npy`` files open as memory maps
(``np.load(mmap_mode="r")``), so training reads only the rows it needs. Documents, not
examples, are split between train and validation, so no text leaks across the split.
Finished units are kept in ``<output_dir>.cache`` (hard-linked into the output), so a
killed run, or one after the corpus grew, redoes only what is new.

Packing itself (sentences into ``[CLS] A [SEP] B [SEP]`` examples) is in
:mod:`electra.data.packing`; this module is the stage: the unit of work and the merge.
:class:`electra.data.packed.PackedDataset` reads the output.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from electra.core.config import TokenizeConfig
from electra.core.files import atomic_dir, read_json, sha256_file, sha256_tree, write_json
from electra.core.keys import content_key
from electra.core.parallel import default_workers, map_units
from electra.data.packing import PackedExample, encoded_documents, pack_document
from electra.data.shards import read_shards, shard_documents
from electra.data.wordpiece import tokenizer_from_vocab, train_tokenizer

# The modules a unit's folder depends on (besides its shard, the tokenizer and the settings):
# reading the shard, packing it, and this unit of work. Editing any of them makes every unit stale.
UNIT_CODE = ("data/tokenize.py", "data/packing.py", "data/shards.py")


def _is_validation(document: list[str], fraction: float, seed: int) -> bool:
    """Assign a document to validation by a seeded hash of its text (stable across runs)."""
    digest = hashlib.sha256(f"{seed}:{document[0]}:{len(document)}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


class _ShardedArrayWriter:
    """Writes examples into ``.npy`` shards of at most ``shard_examples`` rows.

    Each example goes straight into the shard's preallocated arrays (2-3 bytes per
    position), so memory is one shard's worth whatever the corpus size.
    """

    def __init__(self, folder: Path, max_seq_length: int, pad_id: int, id_dtype: np.dtype, shard_examples: int):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_seq_length = max_seq_length
        self.pad_id = pad_id
        self.id_dtype = id_dtype
        self.shard_examples = shard_examples
        self._ids: np.ndarray | None = None
        self._types: np.ndarray | None = None
        self._lengths: np.ndarray | None = None
        self._rows = 0
        self.shards = 0
        self.count = 0
        self.tokens = 0

    def _grow(self) -> None:
        """Room for more rows: doubling from 1024 up to a whole shard (small splits stay small)."""
        have = 0 if self._ids is None else self._ids.shape[0]
        rows = min(self.shard_examples, max(1024, 2 * have))
        ids = np.full((rows, self.max_seq_length), self.pad_id, dtype=self.id_dtype)
        types = np.zeros((rows, self.max_seq_length), dtype=np.uint8)
        lengths = np.zeros(rows, dtype=np.int32)
        if have:
            ids[:have], types[:have], lengths[:have] = self._ids, self._types, self._lengths
        self._ids, self._types, self._lengths = ids, types, lengths

    def add(self, example: PackedExample) -> None:
        if self._ids is None or self._rows == self._ids.shape[0]:
            self._grow()
        row, length = self._rows, len(example.input_ids)
        self._ids[row, :length] = example.input_ids
        self._types[row, : len(example.token_type_ids)] = example.token_type_ids
        self._lengths[row] = length
        self._rows += 1
        if self._rows >= self.shard_examples:
            self.flush()

    def flush(self) -> None:
        if not self._rows:
            return
        n = self._rows
        name = f"{self.shards:05d}"
        np.save(self.folder / f"input_ids-{name}.npy", self._ids[:n])
        np.save(self.folder / f"token_type_ids-{name}.npy", self._types[:n])
        np.save(self.folder / f"lengths-{name}.npy", self._lengths[:n])
        self.shards += 1
        self.count += n
        self.tokens += int(self._lengths[:n].sum())
        # The next shard reuses the arrays: back to padding.
        self._ids.fill(self.pad_id)
        self._types.fill(0)
        self._lengths.fill(0)
        self._rows = 0


# --- the unit of work: one input shard ------------------------------------------------------
#
# Each ingest shard is tokenised and packed on its own, with a random stream seeded by the
# tokenize seed and the shard's content hash, into a folder of its own. The output is the
# units' folders concatenated in shard order, so it is the same whatever the number of
# workers (or machines) and whichever unit finished first. A unit's folder is kept in the
# cache beside the output (``<output_dir>.cache``), keyed by everything its content depends
# on: a run killed midway, or one after shards were added, redoes only the missing units.

SPLITS = ("train", "validation")
ARRAYS = ("input_ids", "token_type_ids", "lengths")


@dataclass(frozen=True)
class UnitJob:
    """What one worker needs to tokenise one input shard: plain, picklable values only."""

    index: int
    shard: str                 # the ingest shard (a text file of documents)
    shard_hash: str
    tokenizer_file: str        # tokenizer.json
    tokenizer_hash: str        # its sha256 (a worker's loaded tokenizer is keyed by it)
    out_dir: str               # the unit's cache folder
    cfg: TokenizeConfig
    special_ids: tuple[int, int, int]   # cls, sep, pad
    id_dtype: str


@functools.lru_cache(maxsize=2)
def _load_tokenizer(path: str, digest: str):
    """A worker loads the tokenizer once for all the units it runs (keyed by its hash too:
    the file's path stays the same when the vocab changes)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)


def tokenize_unit(job: UnitJob) -> dict:
    """Tokenise and pack one input shard into ``job.out_dir``; return its counts.

    A plain function of plain values, so a process pool, a Dask or Ray worker or a
    Prefect task can run it. A unit already in its folder (complete: ``unit.json`` is
    written last, the folder renamed into place) is not redone.
    """
    out = Path(job.out_dir)
    done = out / "unit.json"
    if done.is_file():
        return {**json.loads(done.read_text(encoding="utf-8")), "reused": True}
    backend = _load_tokenizer(job.tokenizer_file, job.tokenizer_hash)
    cls_id, sep_id, pad_id = job.special_ids
    # Seeded by content, not by position: a unit's examples do not depend on which shards
    # came before it, so adding shards leaves the units of the old ones valid.
    cfg = job.cfg
    rng = random.Random(f"{cfg.seed}:{job.shard_hash}")
    produced = documents = 0
    validation_rows: list[int] = []     # the unit's order of production, for a max_examples cut
    with atomic_dir(out) as tmp:
        writers = {split: _ShardedArrayWriter(tmp / split, cfg.max_seq_length, pad_id, np.dtype(job.id_dtype),
                                              cfg.shard_examples) for split in SPLITS}
        for document, sentence_ids in encoded_documents(shard_documents(job.shard), backend):
            documents += 1
            split = "validation" if _is_validation(document, cfg.validation_fraction, cfg.seed) else "train"
            for example in pack_document(sentence_ids, cfg.max_seq_length, cls_id, sep_id, rng, cfg.short_seq_prob):
                writers[split].add(example)
                if split == "validation":
                    validation_rows.append(produced)
                produced += 1
                if cfg.max_examples and produced >= cfg.max_examples:
                    break
            if cfg.max_examples and produced >= cfg.max_examples:
                break
        for writer in writers.values():
            writer.flush()
        np.save(tmp / "validation_rows.npy", np.asarray(validation_rows, dtype=np.int64))
        unit = {
            "index": job.index, "shard": Path(job.shard).name, "shard_hash": job.shard_hash,
            "documents": documents, "examples": produced,
            "splits": {s: {"examples": w.count, "tokens": w.tokens, "shards": w.shards} for s, w in writers.items()},
        }
        write_json(tmp / "unit.json", unit)
    return {**unit, "reused": False}


def _cut(unit: dict, unit_dir: Path, keep: int) -> dict[str, int]:
    """Rows of each split among the unit's first ``keep`` examples (its production order)."""
    validation_rows = np.load(unit_dir / "validation_rows.npy")
    in_validation = int(np.searchsorted(validation_rows, keep))
    return {"train": keep - in_validation, "validation": in_validation}


def _place(src: Path, dst: Path) -> None:
    """Put a unit's array into the output: a hard link (no copy) where the filesystem allows."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _merge_split(units: list[tuple[dict, Path, int | None]], split: str, folder: Path) -> dict:
    """The split's arrays, unit after unit in shard order, and ``index.json`` naming them in that order."""
    folder.mkdir(parents=True, exist_ok=True)
    index, examples, tokens = [], 0, 0
    for unit, unit_dir, keep_rows in units:
        left = keep_rows
        for part in range(unit["splits"][split]["shards"]):
            if left == 0:
                break
            name = f"{unit['index']:05d}-{part:03d}"
            src = {a: unit_dir / split / f"{a}-{part:05d}.npy" for a in ARRAYS}
            lengths = np.load(src["lengths"], mmap_mode="r")
            rows = lengths.shape[0]
            if left is not None and left < rows:
                # The last unit under tokenize.max_examples: its first rows only, as a new file.
                for a in ARRAYS:
                    np.save(folder / f"{a}-{name}.npy", np.load(src[a], mmap_mode="r")[:left])
                rows = left
            else:
                for a in ARRAYS:
                    _place(src[a], folder / f"{a}-{name}.npy")
            if left is not None:
                left -= rows
            index.append({"name": name, "rows": rows, "shard": unit["shard"]})
            examples += rows
            tokens += int(lengths[:rows].sum())
    write_json(folder / "index.json", {"shards": index})
    return {"examples": examples, "tokens": tokens, "shards": len(index)}


def _unit_version(cfg: TokenizeConfig, tokenizer_hash: str) -> str:
    """What every unit's folder depends on besides its shard: the settings that shape the
    examples, the tokenizer (by its file's hash) and the code (``UNIT_CODE``). A unit cached
    under anything else is not reused."""
    settings = {k: getattr(cfg, k) for k in ("max_seq_length", "short_seq_prob", "validation_fraction", "seed",
                                              "shard_examples", "max_examples")}
    return content_key({"settings": settings, "tokenizer": tokenizer_hash}, code=UNIT_CODE)


def _input_shards(cfg: TokenizeConfig) -> dict[str, str]:
    """The ingest shards to tokenise, name -> content hash, from ingest's manifest."""
    manifest = Path(cfg.input_dir) / "manifest.json"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: not found; run `electra ingest` first")
    shards = read_json(manifest).get("shards") or {}
    if not shards:
        raise ValueError(f"{manifest}: lists no shards")
    return shards


def _tokenizer(cfg: TokenizeConfig):
    """The WordPiece tokenizer: read from ``cfg.vocab_file``, or trained on the corpus, from a
    stream over the shards (never from one in-memory list)."""
    if cfg.train_vocab:
        return train_tokenizer(
            (s for doc in read_shards(cfg.input_dir) for s in doc), vocab_size=cfg.vocab_size,
            lowercase=cfg.lowercase,
        )
    return tokenizer_from_vocab(cfg.vocab_file, lowercase=cfg.lowercase)


def _id_dtype(tokenizer) -> np.dtype:
    """The narrowest dtype the token ids fit: uint16 for a vocab of up to 65,535 ids."""
    return np.dtype(np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max else np.int32)


def _unit_jobs(cfg: TokenizeConfig, shards: dict[str, str], tokenizer, cache: Path) -> list[UnitJob]:
    """One unit per input shard, in name order, each with its cache folder (keyed by the
    shard's hash and :func:`_unit_version`). The tokenizer is saved in the cache for the workers."""
    tokenizer_dir = cache / "tokenizer"
    with atomic_dir(tokenizer_dir) as tmp:
        tokenizer.save_pretrained(tmp)
    tokenizer_hash = sha256_file(tokenizer_dir / "tokenizer.json")
    version = _unit_version(cfg, tokenizer_hash)
    special_ids = (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id)
    jobs = []
    for index, (name, shard_hash) in enumerate(sorted(shards.items())):
        key = hashlib.sha256(f"{version}:{shard_hash}".encode()).hexdigest()[:24]
        jobs.append(UnitJob(index=index, shard=str(Path(cfg.input_dir) / name), shard_hash=shard_hash,
                            tokenizer_file=str(tokenizer_dir / "tokenizer.json"), tokenizer_hash=tokenizer_hash,
                            out_dir=str(cache / f"unit-{key}"),
                            cfg=cfg, special_ids=special_ids, id_dtype=_id_dtype(tokenizer).name))
    return jobs


def _run_units(cfg: TokenizeConfig, jobs: list[UnitJob], workers: int,
               progress: bool) -> tuple[list[tuple[dict, Path]], int]:
    """Run the units (``workers`` at a time) and keep them in shard order; under
    ``cfg.max_examples``, only until the cap is reached, the last one marked with where to
    ``cut`` it. Returns the kept units with their folders, and how many came from the cache."""
    from tqdm import tqdm

    kept: list[tuple[dict, Path]] = []
    total = reused = 0
    results = map_units(tokenize_unit, jobs, workers)
    for job, unit in tqdm(zip(jobs, results), total=len(jobs), desc="tokenize", unit="shard", disable=not progress):
        reused += unit.pop("reused")
        if cfg.max_examples and total + unit["examples"] >= cfg.max_examples:
            cut = _cut(unit, Path(job.out_dir), cfg.max_examples - total)
            kept.append(({**unit, "cut": cut}, Path(job.out_dir)))
            total = cfg.max_examples
            break
        kept.append((unit, Path(job.out_dir)))
        total += unit["examples"]
    if hasattr(results, "close"):
        results.close()     # under max_examples: the pool's remaining units are cancelled
    return kept, reused


def _fill_fraction(counts: dict, max_seq_length: int) -> float:
    """Real tokens / (examples x ``max_seq_length``): 1.0 when no slot is padding."""
    return round(counts["tokens"] / (counts["examples"] * max_seq_length), 4) if counts["examples"] else 0.0


def _write_output(cfg: TokenizeConfig, tokenizer, kept: list[tuple[dict, Path]], cache: Path,
                  run: dict, started: float) -> dict:
    """The output folder: the tokenizer, each split merged from the kept units, and
    ``summary.json`` (written last, its ``content_hash`` over everything before it, then
    ``run``: how this run went, with its seconds since ``started``). Returns the summary."""
    with atomic_dir(cfg.output_dir) as tmp:
        shutil.copytree(cache / "tokenizer", tmp / "tokenizer")
        splits = {
            split: _merge_split([(u, d, u.get("cut", {}).get(split)) for u, d in kept], split, tmp / split)
            for split in SPLITS
        }
        documents = sum(u["documents"] for u, _ in kept)
        for counts in splits.values():
            counts["fill_fraction"] = _fill_fraction(counts, cfg.max_seq_length)
        if splits["train"]["examples"] == 0:
            raise ValueError(f"{cfg.input_dir}: the corpus produced no training examples")
        if splits["validation"]["examples"] == 0:
            raise ValueError(
                f"{cfg.input_dir}: no document fell into validation (fraction "
                f"{cfg.validation_fraction} of {documents} documents); raise tokenize.validation_fraction"
            )
        summary = {
            "stage": "tokenize",
            "vocab_size": len(tokenizer),
            "vocab_source": "trained" if cfg.train_vocab else cfg.vocab_file,
            "max_seq_length": cfg.max_seq_length,
            "id_dtype": _id_dtype(tokenizer).name,
            "special_ids": {"cls": tokenizer.cls_token_id, "sep": tokenizer.sep_token_id,
                            "pad": tokenizer.pad_token_id, "mask": tokenizer.mask_token_id},
            "splits": splits,
            # The share of the training slots that hold real tokens (not [PAD]): what a step computes on.
            "fill_fraction": splits["train"]["fill_fraction"],
            "documents": documents,
            "input_shards": len(kept),
        }
        summary["content_hash"] = sha256_tree(tmp)
        # How this run went (not part of the output's content: any worker count gives the same).
        summary["run"] = {**run, "seconds": round(time.time() - started, 3)}
        write_json(tmp / "summary.json", summary)
    return summary


def tokenize(cfg: TokenizeConfig, progress: bool = True) -> dict:
    """Tokenise the ingested corpus and pack it into fixed-length pretraining examples.

    The input shards are tokenised in parallel (``cfg.workers`` processes, or the
    mapper of :func:`electra.core.parallel.unit_mapper`), each into its own folder, and merged in shard order
    by ``index.json`` files: the result is the same whatever the number of workers, and
    a rerun after a kill redoes only the shards not finished. Returns the output folder,
    example counts and the content hash of the output.
    """
    started = time.time()
    # 1. The input: ingest's shards (name -> hash); the tokenizer, read or trained on them.
    shards = _input_shards(cfg)
    tokenizer = _tokenizer(cfg)
    workers = cfg.workers or default_workers()
    cache = Path(f"{cfg.output_dir}.cache")
    cache.mkdir(parents=True, exist_ok=True)
    # 2. One unit per shard, run in parallel (units already in the cache are reused).
    jobs = _unit_jobs(cfg, shards, tokenizer, cache)
    kept, reused = _run_units(cfg, jobs, workers, progress)
    # 3. The output: the units merged in shard order, the summary last.
    run = {"workers": workers, "units": len(kept), "units_reused": reused}
    summary = _write_output(cfg, tokenizer, kept, cache, run, started)
    # 4. Units of other versions or shards are no longer part of any output: reclaim their space.
    live = {Path(job.out_dir).name for job in jobs} | {"tokenizer"}
    for entry in cache.iterdir():
        if entry.name not in live and not entry.name.startswith("."):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
    splits = summary["splits"]
    return {
        "output_dir": cfg.output_dir,
        "train_examples": splits["train"]["examples"],
        "validation_examples": splits["validation"]["examples"],
        "train_tokens": splits["train"]["tokens"],
        "fill_fraction": summary["fill_fraction"],
        "vocab_size": len(tokenizer),
        "units_reused": reused,
        "content_hash": summary["content_hash"],
    }
