"""Typed configuration: ``params.yaml`` + a profile overlay + dotted overrides.

Every stage has one section in ``params.yaml`` with the same name as the stage
(``ingest``, ``tokenize``, ``pretrain``, ``finetune``, ``evaluate``,
``register``). Profiles (``profiles/<name>.yaml``) are partial overlays of the
same shape, merged over ``params.yaml``; dotted overrides (``-S
pretrain.lr=3e-4``) are merged last. The result is validated into frozen
pydantic models that forbid unknown fields, so a typo fails before any work
starts and the error names the field.
"""

from __future__ import annotations

import copy
import hashlib
import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, WithJsonSchema, model_validator

from electra.core.paths import DERIVED_PATHS, derive_paths
from electra.core.task_entries import (  # the per-task entries of finetune.catalog
    DEFAULT_TASKS,
    TASK_ENTRIES,
    GlueEntry,
    NEREntry,
    QAEntry,
    TaskConfig,
    TaskEntry,
    task_entry,
)

__all__ = ["DEFAULT_TASKS", "TASK_ENTRIES", "GlueEntry", "NEREntry", "QAEntry", "TaskConfig", "TaskEntry",
           "task_entry"]

# "register" is a stage name and so a field name; pydantic warns that it shadows
# ABCMeta.register on the class, which nothing here uses.
warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)

class ConfigError(ValueError):
    """Raised for params that cannot be loaded or validated; the message names the field."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class IngestConfig(_Frozen):
    """Raw text in, normalised sentence shards out."""

    sources: list[str] = Field(default_factory=lambda: ["data/pretrain"])
    output_dir: str = "outputs/ingest"
    # Files whose names match one of these globs are not corpus text (READMEs, licences).
    exclude: list[str] = Field(default_factory=lambda: ["README*", "LICENSE*", "*.md"])
    # A line matching this regex starts a new document (WikiText's " = Title = ").
    doc_separator_regex: str | None = r"^= [^=].* =$"
    min_sentence_chars: int = Field(default=2, ge=1)
    min_document_chars: int = Field(default=100, ge=0)
    # A longer "sentence" (a line with no sentence end: a table row, a minified blob) is cut
    # at spaces into pieces of at most this many characters, so no line can blow up packing.
    max_sentence_chars: int = Field(default=2000, ge=100)
    dedup: bool = True
    shard_size_mb: float = Field(default=64.0, gt=0)
    # JSON Lines files (.jsonl, .ndjson, compressed or not): one document per record, its
    # text in this field (a dotted path reaches a nested one: "meta.body").
    jsonl_text_field: str = Field(default="text", min_length=1)
    # A bad JSON Lines record (not JSON, no text at the field) is skipped and counted; a file
    # with a larger share of bad records is skipped whole (a broken export, a misnamed field).
    max_bad_record_fraction: float = Field(default=0.01, ge=0.0, le=1.0)
    # A file that is not UTF-8 (nor marked by a BOM) is kept only when charset-normalizer finds
    # its encoding with this confidence (1 - chaos) or more: never written as mojibake.
    min_encoding_confidence: float = Field(default=0.9, ge=0.0, le=1.0)
    # Near-duplicate documents (word 5-gram Jaccard about this or more), by MinHash + LSH.
    near_dedup: bool = False
    near_dedup_threshold: float = Field(default=0.8, gt=0.0, lt=1.0)
    minhash_permutations: int = Field(default=128, ge=16, le=1024)
    # Processes reading files in parallel; null: all cores. The output is the same for any number.
    workers: int | None = Field(default=None, ge=1)
    # Keep each file's documents in <output_dir>.cache, keyed by its content hash, params and
    # code: a rerun after files were added (or after a kill) reads only the new files.
    cache: bool = True


class TokenizeConfig(_Frozen):
    """WordPiece tokenisation and ELECTRA-style example packing."""

    input_dir: str = "outputs/ingest"
    output_dir: str = "outputs/tokenize"
    vocab_file: str = "data/vocab/bert-base-uncased-vocab.txt"
    train_vocab: bool = False
    vocab_size: int = Field(default=30522, ge=100)
    lowercase: bool = True
    max_seq_length: int = Field(default=128, ge=8)
    short_seq_prob: float = Field(default=0.05, ge=0.0, le=1.0)
    validation_fraction: float = Field(default=0.02, gt=0.0, lt=1.0)
    shard_examples: int = Field(default=100_000, ge=1)
    max_examples: int | None = Field(default=None, ge=1)
    seed: int = 1234
    # Processes tokenising input shards in parallel; null: all cores. The output is the
    # same for any number (each shard is a unit with its own seeded stream, merged in order).
    workers: int | None = Field(default=None, ge=1)


class ModelConfig(_Frozen):
    """The discriminator's shape; the generator is derived from it (narrower, same depth)."""

    hidden_size: int = Field(default=128, ge=8)
    num_layers: int = Field(default=2, ge=1)
    num_heads: int = Field(default=2, ge=1)
    intermediate_size: int = Field(default=512, ge=8)
    embedding_size: int = Field(default=128, ge=8)
    max_position_embeddings: int = Field(default=512, ge=8)
    generator_fraction: float = Field(default=0.25, gt=0.0, le=1.0)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check_shapes(self) -> ModelConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})"
            )
        gen_heads = max(1, round(self.num_heads * self.generator_fraction))
        gen_hidden = round(self.hidden_size * self.generator_fraction)
        if gen_hidden % gen_heads:
            raise ValueError(
                f"generator hidden size {gen_hidden} (hidden_size x generator_fraction) is not "
                f"divisible by its {gen_heads} heads"
            )
        return self


class PretrainConfig(_Frozen):
    """Replaced-token detection (or the MLM baseline) with the paper's optimiser recipe."""

    input_dir: str = "outputs/tokenize"
    output_dir: str = "outputs/pretrain"
    model: ModelConfig = Field(default_factory=ModelConfig)
    objective: Literal["electra", "mlm"] = "electra"
    mask_prob: float = Field(default=0.15, gt=0.0, lt=1.0)
    # Of the masked positions, this share shows [MASK]; the rest keep the original token.
    mask_token_prob: float = Field(default=0.85, ge=0.0, le=1.0)
    temperature: float = Field(default=1.0, gt=0.0)
    generator_weight: float = Field(default=1.0, ge=0.0)
    discriminator_weight: float = Field(default=50.0, ge=0.0)
    batch_size: int = Field(default=16, ge=1)
    grad_accum_steps: int = Field(default=1, ge=1)
    max_steps: int = Field(default=300, ge=1)
    lr: float = Field(default=5e-4, gt=0.0)
    weight_decay: float = Field(default=0.01, ge=0.0)
    warmup_steps: int = Field(default=30, ge=0)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-6
    max_grad_norm: float = Field(default=1.0, gt=0.0)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # A non-finite loss or gradient norm: "stop" (the weights stay those before the step, the
    # last checkpoint intact, a rerun resumes) or "skip" that batch (no optimizer step; after
    # MAX_CONSECUTIVE_SKIPS in a row it stops anyway: the run has diverged).
    # Also save the discriminator (HF format) at these steps, to snapshots/step-NNNNNNN/.
    snapshot_steps: list[int] = Field(default_factory=list)
    on_nonfinite: Literal["stop", "skip"] = "stop"
    # torch.compile the step: "auto" = on where CUDA, off on the CPU.
    compile: Literal["auto"] | bool = "auto"
    # Masked slots per row (static shapes); null: ceil(mask_prob x seq_len), which no row exceeds.
    max_predictions_per_seq: int | None = Field(default=None, ge=1)
    device: str = "auto"
    # Processes (GPUs) per node for data-parallel training: > 1 makes the Prefect task
    # launch the stage under torchrun (the CLI door is launched by torchrun directly).
    nproc_per_node: int = Field(default=1, ge=1)
    log_every: int = Field(default=10, ge=1)
    eval_batches: int = Field(default=4, ge=0)
    checkpoint_every: int = Field(default=100, ge=1)
    keep_checkpoints: int = Field(default=2, ge=1)
    seed: int = 1234
    # Train even when the schedule reads the corpus more than MAX_EPOCHS (50) times
    # (electra/pretraining/corpus.py); off, such a run stops before it starts.
    allow_small_corpus: bool = False

    @model_validator(mode="after")
    def _check_snapshots(self) -> PretrainConfig:
        outside = [s for s in self.snapshot_steps if not 1 <= s <= self.max_steps]
        if outside:
            raise ValueError(f"snapshot_steps {outside} lie outside 1..max_steps ({self.max_steps})")
        return self


class FinetuneConfig(_Frozen):
    """ELECTRA's fine-tuning recipe (layer-wise LR decay, linear warm-up/decay) and its tasks.

    ``catalog`` holds each task's entry (kind, data, own overrides); ``tasks`` selects
    which run, in order (absent: every catalog entry that names its kind; an entry without
    one only tunes a task selected otherwise). A selected task without an entry
    gets its default (:data:`DEFAULT_TASKS`), so ``tasks=["sst2"]`` alone works.
    ``for name in cfg.tasks`` gives the names; ``cfg.catalog[name]`` the entry.
    """

    model_dir: str = "outputs/pretrain/discriminator"
    data_dir: str = "data/glue"
    output_dir: str = "outputs/finetune"
    tasks: list[str] = Field(default_factory=lambda: ["sst2", "mrpc"])
    # Each entry is validated by its kind's class (task_entry); the JSON schema Prefect checks
    # a form or deployment's parameters against says only "an object per task", since which
    # fields an entry has depends on its kind.
    catalog: Annotated[dict[str, SerializeAsAny[TaskEntry]],
                       WithJsonSchema({"type": "object", "additionalProperties": {"type": "object"}})] = Field(
        default_factory=dict)
    # Fine-tuning seeds per task: seed, seed + 1, ...; reports give the median and spread.
    seeds: int = Field(default=1, ge=1)
    lr: float = Field(default=3e-4, gt=0.0)
    layer_decay: float = Field(default=0.8, gt=0.0, le=1.0)
    warmup_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    adam_eps: float = 1e-6
    batch_size: int = Field(default=32, ge=1)
    epochs: float = Field(default=3.0, gt=0)
    max_seq_length: int = Field(default=128, ge=8)
    max_train_examples: int | None = Field(default=None, ge=1)
    max_eval_examples: int | None = Field(default=None, ge=1)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    device: str = "auto"
    # bf16 autocast for fine-tuning and its predictions (fp32 losses): auto = where it measures
    # faster (CUDA; a CPU whose bf16 matmul probe beats fp32), else fp32.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    seed: int = 1234

    @model_validator(mode="before")
    @classmethod
    def _resolve_catalog(cls, data: Any) -> Any:
        """Every selected task gets an entry: its own in ``catalog`` over its default."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        given = dict(data.get("catalog") or {})
        if data.get("tasks") is None:
            # The catalog's declared tasks (those with a kind): a profile's partial entry
            # (qa: {max_seq_length: 128}) tunes a task, it does not add one, so the tasks
            # stay those of params.yaml's catalog, which are DVC's finetune@<task> stages.
            declared = [n for n, e in given.items() if isinstance(e, TaskEntry) or (isinstance(e, dict) and "kind" in e)]
            data["tasks"] = declared or ["sst2", "mrpc"]
        if not isinstance(data["tasks"], list | tuple) or not all(isinstance(t, str) for t in data["tasks"]):
            raise ValueError(f"finetune.tasks: expected a list of task names, got {data['tasks']!r}")
        if len(set(data["tasks"])) != len(data["tasks"]):
            raise ValueError(f"finetune.tasks: {data['tasks']} names a task twice")
        data_dir = str(data.get("data_dir") or "data/glue")
        names = list(dict.fromkeys([*given, *data["tasks"]]))
        data["catalog"] = {name: task_entry(name, given.get(name), data_dir) for name in names}
        return data

    @model_validator(mode="after")
    def _check_entries(self) -> FinetuneConfig:
        for name in self.tasks:
            self.catalog[name].check(self)
        return self

    def entry(self, task: str) -> TaskEntry:
        """The entry of a selected task; ValueError naming the selection otherwise."""
        if task not in self.tasks:
            raise ValueError(f"task {task!r} is not in finetune.tasks ({', '.join(self.tasks)})")
        return self.catalog[task]

    def task_data(self, task: str | None = None) -> list[str]:
        """The files and folders fine-tuning reads: one task's, or every selected task's."""
        names = self.tasks if task is None else [task]
        return list(dict.fromkeys(f for name in names for f in self.entry(name).files()))


class EvaluateConfig(_Frozen):
    """GLUE dev metrics for the fine-tuned models and the bias benchmarks."""

    finetune_dir: str = "outputs/finetune"
    pretrain_dir: str = "outputs/pretrain"
    data_dir: str = "data"
    output_dir: str = "outputs/evaluate"
    batch_size: int = Field(default=64, ge=1)
    max_eval_examples: int | None = Field(default=None, ge=1)
    crows_max_pairs: int | None = Field(default=None, ge=1)
    stereoset_max_examples: int | None = Field(default=None, ge=1)
    eec_max_sentences: int | None = Field(default=None, ge=1)
    # Resamples of every bias bootstrap interval (95%).
    bias_bootstrap: int = Field(default=1000, ge=100)
    device: str = "auto"
    # Fine-tune the same architecture from random weights (same recipe, seeds and examples)
    # per task, and report the gain from pretraining over it with its intervals.
    scratch_control: bool = True


class GateConfig(_Frozen):
    """What a new version must show before it becomes ``champion``.

    Metric keys are dotted paths into ``outputs/evaluate/metrics.json`` (values are
    fractions, bias scores percent as the benchmarks define them).
    """

    # metric key -> lowest value allowed (e.g. glue.sst2.accuracy: 0.85)
    min_metrics: dict[str, float] = Field(default_factory=dict)
    # metric key -> highest value allowed (e.g. bias.eec.gender.mean_abs_gap: 0.05)
    max_metrics: dict[str, float] = Field(default_factory=dict)
    # Non-inferiority against the current champion on the same dev examples: the lower
    # bound of the paired-bootstrap interval of (new - champion) on each task's main
    # metric must lie above -margin.
    non_inferiority_margin: float = Field(default=0.02, ge=0.0, le=1.0)
    margins: dict[str, float] = Field(default_factory=dict)   # per task, e.g. {cola: 0.05}
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    resamples: int = Field(default=1000, ge=100)
    # A bias score (CrowS-Pairs, StereoSet SS/ICAT, EEC mean gap) may not move further from
    # its ideal than the champion's by more than its own interval's half-width.
    bias_drift: bool = True
    # Fewer shared dev examples than this fraction of the new version's: not comparable.
    min_overlap: float = Field(default=0.9, gt=0.0, le=1.0)
    seed: int = 0
    # The discriminator must beat the scratch control: the lower bound of the 95% interval
    # of its mean gain over the GLUE tasks (metrics.json gain_over_scratch) above 0.
    require_gain_over_scratch: bool = False


class RegisterConfig(_Frozen):
    """Registry names, the promotion gate, and whether a person must approve a promotion."""

    pretrain_dir: str = "outputs/pretrain"
    finetune_dir: str = "outputs/finetune"
    evaluate_dir: str = "outputs/evaluate"
    output_dir: str = "outputs/register"
    model_name: str = "electra-discriminator"
    task_model_prefix: str = "electra-"
    register_finetuned: bool = True
    gate: GateConfig = Field(default_factory=GateConfig)
    # true: versions that pass wait as `challenger` until a person approves (the Prefect
    # flow pauses for it; elsewhere `electra promote`); false: they become `champion`.
    require_approval: bool = False
    approval_timeout_s: int = Field(default=86400, ge=60)   # how long the flow waits for a person
    licenses_file: str = "data/LICENSES.md"


class TrackingConfig(_Frozen):
    """MLflow: embedded sqlite + local artifacts unless MLFLOW_TRACKING_URI is set."""

    tracking_uri: str | None = None
    experiment: str = "electra"
    store_path: str = "mlflow.db"
    artifact_dir: str = "mlartifacts"

    @model_validator(mode="after")
    def _no_credentials(self) -> TrackingConfig:
        # Params are logged, hashed into lineage and committed: a password must never be one.
        from urllib.parse import urlsplit

        if self.tracking_uri and urlsplit(self.tracking_uri).password:
            raise ValueError(
                "tracking.tracking_uri holds a password: put credentials in the environment "
                "(MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN), never in params"
            )
        return self


GLUE_TRAINED = Literal["sst2", "mrpc", "rte", "cola", "stsb"]


class CompareConfig(_Frozen):
    """``electra compare``: replaced-token detection against masked LM at equal training FLOPs.

    The encoder, optimizer, schedule and data order are the ``pretrain`` section's; the
    fine-tuning protocol is the ``finetune`` section's (with the tasks and seeds here).
    """

    input_dir: str = "outputs/tokenize"
    output_dir: str = "outputs/compare"
    # The budget: the training FLOPs of this many ELECTRA steps (its generator included);
    # budget_flops, when set, instead. The MLM run gets as many steps as the same FLOPs buy.
    electra_steps: int = Field(default=600, ge=1)
    budget_flops: float | None = Field(default=None, gt=0)
    # Snapshots at these fractions of the budget, each fine-tuned and evaluated.
    fractions: list[float] = Field(default_factory=lambda: [0.125, 0.25, 0.5, 1.0], min_length=1)
    tasks: list[GLUE_TRAINED] = Field(default_factory=lambda: ["sst2", "mrpc", "rte", "cola", "stsb"], min_length=1)
    seeds: int = Field(default=3, ge=1)
    max_train_examples: int | None = Field(default=2000, ge=1)
    max_eval_examples: int | None = Field(default=None, ge=1)
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)

    @model_validator(mode="after")
    def _check_fractions(self) -> CompareConfig:
        if any(not 0 < f <= 1 for f in self.fractions) or sorted(set(self.fractions)) != list(self.fractions):
            raise ValueError(f"fractions {self.fractions} must be increasing, distinct and in (0, 1]")
        return self


class PrefectConfig(_Frozen):
    """How the Prefect door runs the stages (not a stage: no output depends on it, DVC ignores it)."""

    # "<flow>/<deployment>" to run pretraining (each fine-tuning task) as a flow run on a
    # GPU work pool; null: in the pipeline's own process. The worker must see the same
    # outputs folder (a shared volume): stages hand over paths and hashes, never objects.
    pretrain_deployment: str | None = None
    finetune_deployment: str | None = None
    # Fine-tuning and evaluation tasks hold a slot of a global concurrency limit named after
    # the device ("gpu" or "cpu"); created with this many slots when it does not exist.
    device_slots: int = Field(default=1, ge=1)
    retries: int = Field(default=2, ge=0)      # per stage, for transient failures
    retry_delay_s: float = Field(default=10.0, ge=0)   # first back-off; doubles per retry, jittered
    # After the flow: `dvc commit` so that dvc.lock describes what the flow made, when the
    # flow ran exactly what `dvc repro` would (params.yaml's profile, no overrides).
    dvc_commit: bool = True
    # Where the data stages' units of work run (ingest: one per file; tokenize: one per
    # input shard): "local", processes of the stage's own (its `workers`), or "dask", one
    # Prefect task per unit on a Dask cluster (prefect-dask): the scheduler at dask_address,
    # or a local cluster of dask_workers processes. The outputs are the same either way;
    # the workers must see the same files (a shared volume).
    task_runner: Literal["local", "dask"] = "local"
    dask_address: str | None = None
    dask_workers: int = Field(default=2, ge=1)


def _without_default_paths(section: str, body: dict[str, Any]) -> dict[str, Any]:
    """A section from a form (the Prefect UI sends every field) minus the stage paths it
    leaves at their defaults: those derive from ``output_root`` as if left out."""
    field = Params.model_fields.get(section)
    if field is None or field.default_factory is None:
        return body
    default = field.default_factory()
    return {k: v for k, v in body.items()
            if not ((section, k) in DERIVED_PATHS and v == getattr(default, k, object()))}


class Params(_Frozen):
    """The whole pipeline's configuration (``register`` shadows ABCMeta.register, harmlessly)."""

    profile: str = "tiny"
    # Every stage's output folder lies under here unless its section names its own.
    output_root: str = "outputs"
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    tokenize: TokenizeConfig = Field(default_factory=TokenizeConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    register: RegisterConfig = Field(default_factory=RegisterConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    prefect: PrefectConfig = Field(default_factory=PrefectConfig)

    @model_validator(mode="before")
    @classmethod
    def _derive_paths(cls, data: Any) -> Any:
        return derive_paths(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _check_cross_section(self) -> Params:
        if self.tokenize.max_seq_length > self.pretrain.model.max_position_embeddings:
            raise ValueError(
                f"tokenize.max_seq_length ({self.tokenize.max_seq_length}) exceeds "
                f"pretrain.model.max_position_embeddings ({self.pretrain.model.max_position_embeddings})"
            )
        if self.finetune.max_seq_length > self.pretrain.model.max_position_embeddings:
            raise ValueError(
                f"finetune.max_seq_length ({self.finetune.max_seq_length}) exceeds "
                f"pretrain.model.max_position_embeddings ({self.pretrain.model.max_position_embeddings})"
            )
        return self

    def section_hash(self, stage: str) -> str:
        """Content hash of one stage's section (what DVC's params dependency sees)."""
        section = getattr(self, stage).model_dump(mode="json")
        return hashlib.sha256(json.dumps(section, sort_keys=True).encode()).hexdigest()

    def params_hash(self) -> str:
        """Content hash of the whole effective configuration."""
        return hashlib.sha256(
            json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        ).hexdigest()


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``overlay`` merged in (nested dicts merge, everything else replaces)."""
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value``; the value is read as YAML (numbers, lists, null, bools)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form section.key=value")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from exc
    return parts, value


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid params ({source}):"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        lines.append(f"  {loc}: {err['msg']}")
    return "\n".join(lines)


def load_resolved(path: str | Path) -> Params:
    """Load a fully resolved params file (``Params`` as YAML, no profile overlay)."""
    p = Path(path)
    try:
        return Params.model_validate(_read_yaml(p))
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, str(p))) from None


def write_resolved(params: Params, path: str | Path) -> Path:
    """Write ``params`` as a resolved YAML snapshot (what another process can load exactly)."""
    from electra.core.files import atomic_open

    with atomic_open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(params.model_dump(mode="json"), handle, sort_keys=False)
    return Path(path)


def load_params(
    params_file: str | Path = "params.yaml",
    profile: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    profiles_dir: str | Path | None = None,
    sections: Mapping[str, Any] | None = None,
) -> Params:
    """Load ``params.yaml``, merge the profile overlay, ``sections`` and the overrides, and validate.

    The profile is ``profile`` when given, else the file's ``profile`` key. ``sections``
    maps section names to values (dicts or the section's model, e.g. from the Prefect
    form), merged over the profile; the dotted overrides come last. Raises
    :class:`ConfigError` with the offending field named.
    """
    params_path = Path(params_file)
    if not params_path.is_file():
        # Running on silent defaults would train something nobody asked for.
        raise ConfigError(f"params file {params_path} not found (run from the project root, or pass --params)")
    raw = _read_yaml(params_path)
    chosen = profile or raw.get("profile") or "tiny"
    profiles_root = Path(profiles_dir) if profiles_dir else params_path.parent / "profiles"
    profile_path = profiles_root / f"{chosen}.yaml"
    if profile_path.exists():
        raw = deep_merge(raw, _read_yaml(profile_path))
    elif chosen != "tiny":
        known = sorted(p.stem for p in profiles_root.glob("*.yaml"))
        raise ConfigError(f"unknown profile {chosen!r}: no {profile_path} (known: {known})")
    raw["profile"] = chosen
    for name, value in (sections or {}).items():
        if value is None:
            continue
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json", exclude_unset=True)
        if not isinstance(value, dict):
            raise ConfigError(f"section {name!r}: expected a mapping, got {type(value).__name__}")
        raw[name] = deep_merge(raw.get(name) or {}, _without_default_paths(name, value))
    for text in overrides:
        parts, value = parse_override(text)
        node = raw
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        source = f"{params_path}, profile {chosen!r}" + (f", overrides {list(overrides)}" if overrides else "")
        raise ConfigError(_format_validation_error(exc, source)) from None
