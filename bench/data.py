"""The data stages at scale: tokenize+pack throughput against raw ``tokenizers``, peak memory
of ingest and tokenize as the corpus grows, and the wall time of a no-op rerun.

Every measured run is its own subprocess, so its peak RSS (``wait4``) is its own. The
parent prints a table for people and, as its last line, one JSON object.

    python bench/data.py                              # data/pretrain, 1x and 10x, 1 worker
    python bench/data.py --scale 4 --workers 1 2 8    # any worker counts, for many-core machines

Throughput compares tokenize+pack on N workers (processes, one tokenizer thread each)
with the raw ``tokenizers`` ``encode_batch`` on N threads over the same sentences, and
reports the packing's fill (real tokens / (examples x max_seq_length), tokenize's
``fill_fraction``) and example count.
Memory rows run on one worker (in the stage's own process); with N workers each
process holds about that much.

Growth is synthetic, by repetition: ``files`` makes N marked copies of every file (N times
the files), ``lines`` makes every file N times longer (the same number of files, each N
times the size). A marker word on every line keeps the copies from being deduplicated.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# One measured step, run in a child: prints {"seconds": ..., **result} as its last line.
CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
step, config = sys.argv[2], json.loads(sys.argv[3])
# Imports are not the stage's work: every timer starts after them.
from electra.core.config import IngestConfig, TokenizeConfig
from electra.data.ingest import ingest
from electra.data.tokenize import tokenize
started = time.perf_counter()
if step == "ingest":
    result = ingest(IngestConfig(**config), progress=False)
elif step == "tokenize":
    result = tokenize(TokenizeConfig(**config), progress=False)
elif step == "raw":
    # The same sentences, encoded by the tokenizers library alone (read first, not timed).
    from electra.data.shards import read_shards
    from electra.data.wordpiece import tokenizer_from_vocab
    backend = tokenizer_from_vocab(config["vocab_file"]).backend_tokenizer
    sentences = [s for doc in read_shards(config["input_dir"]) for s in doc]
    started = time.perf_counter()
    tokens = 0
    for at in range(0, len(sentences), 1000):
        tokens += sum(len(e.ids) for e in backend.encode_batch(sentences[at:at + 1000], add_special_tokens=False))
    result = {"tokens": tokens}
elif step == "noop":
    from electra.core.config import load_params
    from electra.pipeline.stages import run_stage
    params = load_params(config["params"], overrides=config["overrides"])
    started = time.perf_counter()
    result = {stage: bool(run_stage(stage, params, progress=False, skip_unchanged=True).get("up_to_date"))
              for stage in ("ingest", "tokenize")}
print(json.dumps({"seconds": time.perf_counter() - started, **{k: v for k, v in result.items()
                                                                  if isinstance(v, (int, float, str, bool))}}))
"""


def run_child(step: str, config: dict, threads: int) -> dict:
    """Run one step in a fresh process; its result, wall seconds and peak RSS in MiB (the
    largest of the process and the workers it waited for, as ``wait4`` reports it)."""
    env = {**os.environ, "RAYON_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
           "TOKENIZERS_PARALLELISM": "true", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(ROOT), step, json.dumps(config)],
                                stdout=out, stderr=err, text=True, env=env, cwd=ROOT)
        # wait4, not proc.wait: it also returns the child's own resource usage (peak RSS).
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"{step} failed:\n{err.read()[-3000:]}")
        result = json.loads(out.read().strip().splitlines()[-1])
    result["peak_mib"] = round(usage.ru_maxrss / 1024, 1)   # Linux: KiB
    return result


def corpus_files(corpus: Path) -> list[Path]:
    """The files ingest reads from ``corpus`` with the default excludes."""
    from electra.core.config import IngestConfig
    from electra.data.sources import resolve_sources

    return [path for _, path in resolve_sources([str(corpus)], IngestConfig().exclude)]


def grow(corpus: Path, out: Path, scale: int, how: str) -> Path:
    """``corpus`` repeated ``scale`` times, as more files (``files``) or longer ones (``lines``)."""
    out.mkdir(parents=True, exist_ok=True)
    for path in corpus_files(corpus):
        data = path.read_bytes()
        lines = data.splitlines(keepends=True)

        def marked(k: int) -> bytes:
            # Blank lines stay blank (they separate paragraphs) and WikiText headings stay
            # headings (they separate documents); every other line gets the copy's marker.
            return b"".join(line if not line.strip() or line.lstrip().startswith(b"= ") else b"x%d " % k + line
                            for line in lines)

        relative = path.relative_to(corpus)
        if how == "files":
            for k in range(scale):
                target = out / f"copy{k}" / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(marked(k) if k else data)
        else:
            target = out / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as handle:
                for k in range(scale):
                    handle.write(marked(k) if k else data)
                    handle.write(b"\n\n")
    return out


def ingest_rows(corpus: Path, variants: list[tuple[str, Path]], workers: list[int], shard_mb: float,
                work: Path) -> list[dict]:
    """Ingest every corpus variant on one worker (its shards feed the tokenize rows), then the
    1x corpus on each other worker count."""
    ingest_cfg = {"shard_size_mb": shard_mb, "workers": 1}   # other fields: IngestConfig's defaults
    runs = [(name, source, 1, work / f"ingest-{name.replace(' ', '-')}") for name, source in variants]
    runs += [("1x", corpus, n, work / f"ingest-1x-{n}") for n in workers if n != 1]
    rows = []
    for name, source, n, out in runs:
        result = run_child("ingest", {**ingest_cfg, "workers": n, "sources": [str(source)], "output_dir": str(out)}, 1)
        rows.append({"step": "ingest", "corpus": name, "workers": n, "seconds": round(result["seconds"], 2),
                     "peak_mib": result["peak_mib"], "documents": result["documents"]})
    return rows


def tokenize_rows(variants: list[tuple[str, Path]], workers: list[int], vocab: str, work: Path) -> list[dict]:
    """Tokenize+pack each variant's shards on each worker count (the longer-lines corpus on one
    worker only: it measures memory), against the raw tokenizer on the same sentences."""
    rows = []
    for threads in workers:
        for name, _ in variants:
            if threads > 1 and name.endswith("lines"):
                continue   # memory is measured on one worker; scaling on the 1x and 10x-files corpora
            shards = work / f"ingest-{name.replace(' ', '-')}"
            text_mb = sum(p.stat().st_size for p in shards.glob("shard-*.txt")) / 2**20
            tok = {"input_dir": str(shards), "output_dir": str(work / f"tok-{threads}-{name.replace(' ', '-')}"),
                   "vocab_file": vocab, "shard_examples": 100_000, "workers": threads}
            ours = run_child("tokenize", tok, threads)
            # fill: the share of the packed slots that hold real tokens (tokenize's fill_fraction).
            row = {"step": "tokenize+pack", "corpus": name, "workers": threads,
                   "seconds": round(ours["seconds"], 2), "peak_mib": ours["peak_mib"],
                   "mb_per_s": round(text_mb / ours["seconds"], 2), "fill": ours["fill_fraction"],
                   "examples": ours["train_examples"]}
            if not name.endswith("lines"):
                raw = run_child("raw", tok, threads)
                row["tokens_per_s"] = round(raw["tokens"] / ours["seconds"])
                row["raw_tokens_per_s"] = round(raw["tokens"] / raw["seconds"])
                row["vs_raw"] = round(raw["seconds"] / ours["seconds"], 3)
                row["packed_tokens"] = ours["train_tokens"]
            rows.append(row)
    return rows


def rerun_row(corpus: Path, work: Path) -> dict:
    """A rerun with nothing changed, through the stages' skip records (what `electra run`,
    the flow and `dvc repro`'s fingerprints do), after one full run."""
    overrides = [f"ingest.sources=[{corpus}]", f"ingest.output_dir={work}/noop-ingest",
                 f"tokenize.input_dir={work}/noop-ingest", f"tokenize.output_dir={work}/noop-tok",
                 f"tracking.store_path={work}/mlflow.db", f"tracking.artifact_dir={work}/mlartifacts"]
    noop = {"params": str(ROOT / "params.yaml"), "overrides": overrides}
    first = run_child("noop", noop, 1)
    again = run_child("noop", noop, 1)
    return {"step": "rerun (all up to date)", "corpus": "1x", "workers": 1,
            "seconds": round(again["seconds"], 2), "first_run_seconds": round(first["seconds"], 2),
            "skipped": again["ingest"] and again["tokenize"]}


def report(args: argparse.Namespace, corpus_mb: float, rows: list[dict]) -> None:
    """The table for people, then one JSON object (with the peak-memory growth ratios) as the last line."""
    print(f"corpus {args.corpus}: {corpus_mb:.1f} MB of text files; growth x{args.scale}; {os.cpu_count()} CPUs")
    keys = ["step", "corpus", "workers", "seconds", "peak_mib", "mb_per_s", "tokens_per_s", "raw_tokens_per_s",
            "vs_raw", "fill", "examples", "first_run_seconds", "skipped"]
    print(" | ".join(keys))
    for row in rows:
        print(" | ".join(str(row.get(k, "")) for k in keys))
    by = {(r["step"], r["corpus"], r["workers"]): r for r in rows}
    summary = {"corpus_mb": round(corpus_mb, 2), "scale": args.scale, "rows": rows}
    if by.get(("tokenize+pack", "1x", 1)):
        summary["fill_fraction"] = by[("tokenize+pack", "1x", 1)]["fill"]
    for step in ("ingest", "tokenize+pack"):
        base = by.get((step, "1x", 1))
        for how in ("files", "lines"):
            grown = by.get((step, f"{args.scale}x {how}", 1))
            if base and grown:
                summary[f"{step}_peak_ratio_{how}"] = round(grown["peak_mib"] / base["peak_mib"], 2)
    print(json.dumps(summary))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(ROOT / "data" / "pretrain"))
    parser.add_argument("--vocab", default=str(ROOT / "data" / "vocab" / "bert-base-uncased-vocab.txt"))
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--workers", type=int, nargs="+", default=[1])
    parser.add_argument("--shard-mb", type=float, default=1.0,
                        help="ingest shard size: the unit of tokenize's parallel work")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="electra-bench-data-"))
    try:
        corpus = Path(args.corpus)
        corpus_mb = sum(p.stat().st_size for p in corpus_files(corpus)) / 2**20
        variants = [("1x", corpus),
                    (f"{args.scale}x files", grow(corpus, work / "files", args.scale, "files")),
                    (f"{args.scale}x lines", grow(corpus, work / "lines", args.scale, "lines"))]
        rows = ingest_rows(corpus, variants, args.workers, args.shard_mb, work)
        rows += tokenize_rows(variants, args.workers, args.vocab, work)
        rows.append(rerun_row(corpus, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(args, corpus_mb, rows)


if __name__ == "__main__":
    main()
