"""The Stage table: every stage once, with what it reads, writes and is made of.

Each door is built from this table. The CLI has one command per row (``electra
<name>``). The Prefect flow has one task per row, fanned out per task where
``per_task``. The skip-if-unchanged fingerprint hashes a row's ``sections``, ``code``
and ``inputs``. ``dvc.yaml`` is written by hand, for people to read, and a test
(``tests/pipeline/test_table.py``) checks that its deps, params and outs agree with
this table.

The stage functions are imported when a stage runs, not when the table is read, so
the CLI starts without loading torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from electra.core.config import Params

if TYPE_CHECKING:
    from electra.core.tracking import MetricLogger

Runner = Callable[["Params", "MetricLogger", bool, "str | None"], dict]


@dataclass(frozen=True)
class Stage:
    """One pipeline stage: a row of the table."""

    name: str
    doc: str                                     # the CLI command's help
    run: Runner                                  # (params, logger, progress, task) -> small result
    sections: tuple[str, ...]                    # params sections its outputs depend on (its own first)
    code: tuple[str, ...]                        # modules or packages, relative to electra/
    inputs: Callable[[Params, str | None], list[str]]     # files and folders it reads
    outputs: Callable[[Params, str | None], list[Path]]   # folders it writes; the first holds run.json
    per_task: bool = False                       # also runs one task at a time: <name>@<task>
    in_pipeline: bool = True                     # part of `electra run` / `dvc repro`

    def code_paths(self) -> list[str]:
        """The code as DVC lists it: ``electra/<module or package>``."""
        return [f"electra/{c}" for c in self.code]


# --- 1. what each stage runs ---------------------------------------------------------------

def _ingest(params: Params, logger: MetricLogger, progress: bool, task: str | None = None) -> dict:
    from electra.data.ingest import ingest

    return ingest(params.ingest, progress=progress)


def _tokenize(params: Params, logger: MetricLogger, progress: bool, task: str | None = None) -> dict:
    from electra.data.tokenize import tokenize

    return tokenize(params.tokenize, progress=progress)


def _pretrain(params: Params, logger: MetricLogger, progress: bool, task: str | None = None) -> dict:
    from electra.pretraining.trainer import pretrain

    return pretrain(params.pretrain, logger=logger, progress=progress)


def _finetune(params: Params, logger: MetricLogger, progress: bool, task: str | None = None) -> dict:
    from electra.tasks.finetune import finetune, finetune_task

    if task is not None:
        return finetune_task(params.finetune, task, logger=logger, progress=progress)
    return finetune(params.finetune, logger=logger, progress=progress)


def _evaluate(params: Params, logger: MetricLogger, progress: bool, task: str | None = None) -> dict:
    from electra.evaluation.evaluate import evaluate, evaluate_one

    if task is not None:
        # Recompute: this is the task's own run (the summary step is the one that reuses).
        return evaluate_one(task, params.evaluate, params.finetune, logger=logger, reuse=False)
    return evaluate(params.evaluate, params.finetune, logger=logger, progress=progress)


def _register(params: Params, logger: MetricLogger, progress: bool, task: str | None = None) -> dict:
    from electra.registry.register import register

    return register(params, progress=progress)


def _compare(params: Params, logger: MetricLogger, progress: bool, task: str | None = None) -> dict:
    from electra.evaluation.compare import compare

    return compare(params.compare, params.pretrain, params.finetune, params.evaluate, logger=logger,
                   progress=progress)


# --- 2. what each stage reads --------------------------------------------------------------

def _ingest_inputs(params: Params, task: str | None) -> list[str]:
    import glob

    from electra.data.sources import local_path

    # A Hugging Face source on local disk is hashed as its folder; one on the hub cannot be
    # (pin its revision=): it is named only, so the skip decision sees the name change. A
    # task's tsv: file is hashed as the file (its columns are in the params, also hashed).
    local = [local_path(src) for src in params.ingest.sources]
    return sorted({p for src in local for p in (glob.glob(src) or [src])})


def _task_data(params: Params, task: str | None) -> list[str]:
    """The data files and folders the fine-tuning tasks read (one task's, or all of them)."""
    ft = params.finetune
    return ft.task_data(task)


def _finetune_inputs(params: Params, task: str | None) -> list[str]:
    ft = params.finetune
    return [ft.model_dir, *_task_data(params, task)]


def _evaluate_inputs(params: Params, task: str | None) -> list[str]:
    ev = params.evaluate
    if task is not None:
        return [str(Path(ev.finetune_dir) / task), *_task_data(params, task)]
    return [ev.finetune_dir, str(Path(ev.pretrain_dir) / "generator"), *_task_data(params, None),
            str(Path(ev.data_dir) / "bias")]


def _register_inputs(params: Params, task: str | None) -> list[str]:
    reg = params.register
    pre, ev = Path(reg.pretrain_dir), Path(reg.evaluate_dir)
    return [str(pre / "discriminator"), str(pre / "result.json"), str(pre / "run.json"), reg.finetune_dir,
            str(ev / "metrics.json"), str(ev / "predictions"), str(ev / "run.json"), reg.licenses_file]


# --- 3. what each stage writes -------------------------------------------------------------

def _own_output(section: str) -> Callable[[Params, str | None], list[Path]]:
    return lambda params, task: [Path(getattr(params, section).output_dir)]


def _finetune_outputs(params: Params, task: str | None) -> list[Path]:
    out = Path(params.finetune.output_dir)
    return [out] if task is None else [out / task]


def _evaluate_outputs(params: Params, task: str | None) -> list[Path]:
    out = Path(params.evaluate.output_dir)
    return [out] if task is None else [out / "tasks" / task, out / "predictions" / task]


# --- 4. the table --------------------------------------------------------------------------

_SERVICE_CODE = ("core/runtime.py", "core/logs.py")

TABLE: dict[str, Stage] = {s.name: s for s in (
    Stage("ingest", "Read raw text files; write normalised, deduplicated sentence shards and a manifest.",
          _ingest, ("ingest",), ("data/ingest.py", "data/sources.py", "data/decoding.py", "data/text.py", "data/dedup.py",
                               "data/shards.py", "core/parallel.py"),
          _ingest_inputs, _own_output("ingest")),
    Stage("tokenize", "WordPiece-tokenise the shards and pack ELECTRA pretraining examples (memmap shards).",
          _tokenize, ("tokenize",), ("data/tokenize.py", "data/packing.py", "data/shards.py", "data/wordpiece.py",
                                   "core/parallel.py"),
          lambda p, t: [p.tokenize.input_dir, p.tokenize.vocab_file], _own_output("tokenize")),
    Stage("pretrain", "Pretrain generator + discriminator (replaced-token detection); resumes from checkpoints.",
          _pretrain, ("pretrain",), ("pretraining", "data/packed.py", *_SERVICE_CODE),
          lambda p, t: [p.pretrain.input_dir], _own_output("pretrain")),
    Stage("finetune", "Fine-tune the discriminator on each task in finetune.tasks (or one: --task).",
          _finetune, ("finetune",), ("tasks", "core/stats.py", *_SERVICE_CODE),
          _finetune_inputs, _finetune_outputs, per_task=True),
    Stage("evaluate", "Dev metrics of each fine-tuned task (or one: --task), the bias benchmarks, the report.",
          _evaluate, ("evaluate", "finetune"),   # which tasks exist and how their dev sets are read
          ("evaluation/evaluate.py", "evaluation/results.py", "evaluation/report.py", "evaluation/bias", "tasks",
           "core/stats.py", *_SERVICE_CODE),
          _evaluate_inputs, _evaluate_outputs, per_task=True),
    Stage("register", "Log and register the models in MLflow, gate them, set challenger/champion aliases.",
          _register, ("register",),
          ("registry", "evaluation/evaluate.py", "evaluation/results.py", "evaluation/report.py", "tasks",
           "data/sources.py", "core/stats.py", *_SERVICE_CODE),
          _register_inputs, _own_output("register")),
    Stage("compare", "Replaced-token detection vs masked LM at equal training FLOPs: pretrain both, fine-tune "
                     "snapshots, report GLUE against FLOPs with intervals over seeds.",
          _compare, ("compare", "pretrain", "finetune", "evaluate"),   # the encoder, optimizer and protocol compared
          ("evaluation/compare.py", "evaluation/evaluate.py", "evaluation/results.py", "evaluation/report.py",
           "pretraining", "data/packed.py", "tasks", "core/stats.py", *_SERVICE_CODE),
          lambda p, t: [p.compare.input_dir, p.finetune.data_dir], _own_output("compare"),   # GLUE tasks only
          in_pipeline=False),
)}

PIPELINE = tuple(name for name, stage in TABLE.items() if stage.in_pipeline)
PER_TASK = tuple(name for name, stage in TABLE.items() if stage.per_task)


def get_stage(name: str) -> Stage:
    """The table's row for ``name``; a clear error for an unknown one."""
    if name not in TABLE:
        raise ValueError(f"unknown stage {name!r}; stages are {', '.join(TABLE)}")
    return TABLE[name]


def stage_name(stage: str, task: str | None = None) -> str:
    """The name of a stage, or of one task of it (``finetune@sst2``, as DVC names foreach stages)."""
    return stage if task is None else f"{stage}@{task}"
