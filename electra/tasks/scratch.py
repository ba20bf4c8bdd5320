"""The from-scratch control: what fine-tuning gives without pretraining, and the gain over it.

A pretrained encoder is worth its cost only if it fine-tunes better than the same
architecture from random weights. The control is that architecture, fine-tuned and
evaluated exactly as the pretrained one is:

1. :func:`build_init`: the pretrained discriminator's config (and tokenizer), weights drawn
   afresh from :data:`INIT_SEED`. Nothing of the pretrained weights is read, so the control
   stays valid (and cached) when pretraining is rerun.
2. :func:`scratch_config`: the finetune section with that folder as its model and the
   control's own output folder: same recipe, seeds, training subset, dev examples.
3. :func:`task_gain`: pretrained - scratch on the task's main metric (the mean over seeds of
   each seed's difference), with a paired bootstrap interval over dev examples (one resample
   scores both models' every seed, so shared hard examples cancel) and, with several seeds,
   a Student-t interval over the per-seed gains.
4. :func:`mean_gain`: the plain mean of several tasks' gains (the GLUE tasks'), its interval
   from each task's own paired resamples, averaged resample by resample.

The facts the control depends on (:func:`model_facts`: the config without its paths and
the tokenizer files) are what the evaluate stage keys its cached control with.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from electra.core import stats
from electra.core.config import FinetuneConfig
from electra.core.files import atomic_dir
from electra.tasks.base import Task
from electra.tasks.common import BOOTSTRAP_RESAMPLES

# The seed the control's random weights are drawn with: fixed, so every control of one
# architecture starts from the same weights and a rebuilt init folder is identical.
INIT_SEED = 0
# config.json keys that say where or how a checkpoint was saved, not what it is.
_NOT_ARCHITECTURE = ("_name_or_path", "transformers_version", "dtype", "torch_dtype", "architectures")
# Files of a saved model that are its weights or config, not its tokenizer.
_NOT_TOKENIZER = (".safetensors", ".bin", ".pt")
CONFIDENCE = 0.95


def model_facts(model_dir: str | Path) -> tuple[dict[str, Any], dict[str, Path]]:
    """What the control takes from the pretrained model: its architecture (config.json less
    paths, versions and dtype) and its tokenizer files (name -> path), never its weights."""
    folder = Path(model_dir)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    architecture = {k: v for k, v in config.items() if k not in _NOT_ARCHITECTURE}
    tokenizer = {f"tokenizer:{p.name}": p for p in sorted(folder.iterdir())
                 if p.is_file() and p.name not in ("config.json", "generation_config.json")
                 and not p.name.endswith(_NOT_TOKENIZER)}
    return architecture, tokenizer


def build_init(model_dir: str | Path, target: str | Path, seed: int = INIT_SEED) -> Path:
    """Save a randomly initialised discriminator of ``model_dir``'s architecture (and its
    tokenizer) to ``target``, swapped into place only once complete."""
    from transformers import AutoConfig, AutoTokenizer, ElectraForPreTraining

    config = AutoConfig.from_pretrained(model_dir)
    # Pitfall: seeding the global generator would change whatever the caller draws next.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ElectraForPreTraining(config)
    with atomic_dir(Path(target)) as tmp:
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(model_dir).save_pretrained(tmp)
    return Path(target)


def scratch_config(ft: FinetuneConfig, init_dir: str | Path, output_dir: str | Path) -> FinetuneConfig:
    """The finetune section with the random init as its model and ``output_dir`` for its runs."""
    return ft.model_copy(update={"model_dir": str(init_dir), "output_dir": str(output_dir)})


def recipe_values(ft: FinetuneConfig, task: str) -> dict[str, Any]:
    """The finetune section as far as ``task``'s runs depend on it: its entry, the recipe and
    the seeds, without the folders (the init's is the control's own) or the other tasks."""
    section = ft.model_dump(mode="json", exclude={"model_dir", "output_dir", "tasks", "catalog"})
    return {"entry": ft.entry(task).model_dump(mode="json"), "recipe": section}


# --- the gain ----------------------------------------------------------------------------

def _occurrence_keys(impl: Task, rows: Sequence[Mapping]) -> list[tuple[str, int]]:
    """Each row's key with its occurrence number: a dev set may hold the same example twice
    (WNUT-17's dev has repeated sentences), and both copies must pair up."""
    seen: dict[str, int] = {}
    keys = []
    for row in rows:
        key = impl.row_key(row)
        seen[key] = seen.get(key, 0) + 1
        keys.append((key, seen[key]))
    return keys


def _aligned(impl: Task, pretrained: Sequence[Mapping], scratch: Sequence[Mapping]) -> list[Mapping]:
    """``scratch``'s rows in the order of ``pretrained``'s; ValueError when they are not the
    same dev examples with the same gold answers (they were evaluated on one list)."""
    by_key = dict(zip(_occurrence_keys(impl, scratch), scratch, strict=True))
    wanted = _occurrence_keys(impl, pretrained)
    missing = [k for k in wanted if k not in by_key]
    if missing or len(by_key) != len(pretrained):
        raise ValueError(f"{impl.name}: the scratch control was evaluated on other dev examples "
                         f"({len(missing)} of {len(pretrained)} missing, {len(by_key)} scored)")
    ordered = [by_key[k] for k in wanted]
    if any(impl.row_gold(a) != impl.row_gold(b) for a, b in zip(pretrained, ordered, strict=True)):
        raise ValueError(f"{impl.name}: the scratch control's dev examples have other gold answers")
    return ordered


def bootstrap_seed(task: str) -> int:
    """A fixed resampling seed per task: tasks of equal size do not share resamples."""
    return zlib.crc32(task.encode("utf-8"))


def gain_replicates(impl: Task, pretrained: Mapping[str, list], scratch: Mapping[str, list],
                    resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, np.ndarray, dict[str, float]]:
    """(gain on all examples, [resamples] gains on paired resamples, gain per seed).

    ``pretrained`` and ``scratch`` map each seed to its prediction rows. The gain is the
    mean over seeds of (pretrained - scratch) on the main metric; each resample draws dev
    examples once and scores both models of every seed on them.
    """
    seeds = [s for s in pretrained if s in scratch]
    if not seeds:
        raise ValueError(f"{impl.name}: no seed has both a pretrained and a scratch evaluation")
    first = pretrained[seeds[0]]
    pairs = []
    for seed in seeds:
        # Every seed was evaluated on the same list; align to the first seed's order.
        pre = _aligned(impl, first, pretrained[seed])
        pairs.append((impl.statistic(pre), impl.statistic(_aligned(impl, first, scratch[seed]))))

    def gain(idx: np.ndarray) -> float:
        return float(np.mean([new(idx) - old(idx) for new, old in pairs]))

    everything = np.arange(len(first))
    per_seed = {seed: float(new(everything) - old(everything)) for seed, (new, old) in zip(seeds, pairs, strict=True)}
    replicates = stats.bootstrap_replicates(gain, len(first), resamples, bootstrap_seed(impl.name))  # [resamples]
    return gain(everything), replicates, per_seed


def task_gain(impl: Task, pretrained: Mapping[str, list], scratch: Mapping[str, list],
              resamples: int = BOOTSTRAP_RESAMPLES) -> dict[str, Any]:
    """The task section's gain fields: ``gain_over_scratch``, ``gain_over_scratch_ci`` (paired,
    over dev examples), ``gain_over_scratch_per_seed`` and, with several seeds,
    ``gain_over_scratch_seed_ci`` (Student t over the per-seed gains)."""
    point, replicates, per_seed = gain_replicates(impl, pretrained, scratch, resamples)
    out: dict[str, Any] = {"gain_over_scratch": point,
                           "gain_over_scratch_ci": list(stats.percentile_interval(replicates, CONFIDENCE)),
                           "gain_over_scratch_per_seed": per_seed}
    if len(per_seed) > 1:
        _, low, high = stats.t_interval(list(per_seed.values()), CONFIDENCE)
        out["gain_over_scratch_seed_ci"] = [low, high]
    return out


def mean_gain(replicates: Mapping[str, tuple[float, np.ndarray]]) -> dict[str, Any]:
    """The mean gain over tasks (task -> (gain, its [resamples] replicates)) and its interval:
    each resample's mean over the tasks' own paired resamples (drawn independently per task)."""
    tasks = sorted(replicates)
    if not tasks:
        return {"mean": None, "ci": [None, None], "tasks": []}
    point = float(np.mean([replicates[t][0] for t in tasks]))
    stacked = np.stack([replicates[t][1] for t in tasks])                  # [tasks, resamples]
    low, high = stats.percentile_interval(stacked.mean(axis=0), CONFIDENCE)
    return {"mean": point, "ci": [low, high], "tasks": tasks}


def verdict(beat: int, of: int, mean: float | None, ci: Sequence[float | None]) -> str:
    """The report's one sentence on whether pretraining beat the scratch control."""
    if mean is None or of == 0:
        return "no scratch control was evaluated."
    interval = f"{100 * mean:+.1f} [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}] points"
    if ci[0] is not None and ci[0] > 0:
        return (f"pretraining beat scratch on {beat} of {of} tasks (95% interval above 0); "
                f"the GLUE mean gain is {interval}.")
    return (f"pretraining did not beat scratch: {beat} of {of} tasks with a 95% interval above 0; "
            f"the GLUE mean gain is {interval}.")
