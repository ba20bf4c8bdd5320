"""Checkpoints and resume: everything a killed run needs to carry on as if never stopped.

A checkpoint is a folder ``step-NNNNNNN/`` holding

    model.safetensors   the weights (generator and discriminator, shared tensors once)
    trainer_state.pt    optimizer, scheduler, every rank's RNG states, the step and the logged history
    resume.json         the step and the resume key

written atomically (a half-written copy never appears under its final name). The data
position is the step alone: batches and their masking are functions of it
(``electra/pretraining/batches.py``). A checkpoint is resumed only by a run whose resume
key matches: the same configuration (fields that only change how the run is observed
excepted) over the same tokenized data.

RNG states are per rank (dropout masks must differ between ranks): every rank hands its
own to rank 0 (:func:`gather_rng_states`, a collective), rank 0 writes them all, and on
resume each rank restores its own. A resume under another world size cannot replay the
old streams; each rank then reseeds from rank 0's saved state and its rank, with a warning.
"""

from __future__ import annotations

import errno
import logging
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from electra.core.config import PretrainConfig
from electra.core.files import atomic_dir, read_json, write_json
from electra.core.keys import content_key

log = logging.getLogger(__name__)

# Fields that change how the run is observed, not what it computes: a checkpoint
# written under other values of these can still be resumed.
RESUME_NEUTRAL = {"input_dir", "output_dir", "compile", "on_nonfinite", "nproc_per_node", "log_every",
                  "checkpoint_every", "keep_checkpoints", "eval_batches", "device", "snapshot_steps"}


def resume_key(cfg: PretrainConfig, data_hash: str | None) -> str:
    """What a checkpoint must share with this run to be resumed: the config and the data."""
    values = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in RESUME_NEUTRAL}
    values["data_hash"] = data_hash
    return content_key(values)


class CheckpointFolder:
    """The ``step-*`` folders under ``folder``: atomic writes, keeping the ``keep`` newest."""

    def __init__(self, folder: Path, keep: int) -> None:
        self.folder = folder
        self.keep = keep

    def list(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.folder.exists():
            return []
        return sorted(p for p in self.folder.glob("step-*") if (p / "trainer_state.pt").exists())

    def latest_step(self) -> int | None:
        saved = self.list()
        return int(saved[-1].name.split("-")[1]) if saved else None

    def matching(self, key: str) -> Path | None:
        """The newest checkpoint written under the same configuration, if any."""
        for path in reversed(self.list()):
            meta = path / "resume.json"
            if meta.exists() and read_json(meta).get("resume_key") == key:
                return path
        return None

    def clear(self) -> None:
        """Remove every checkpoint (used when none matches: stale state must not linger)."""
        for path in self.list():
            shutil.rmtree(path, ignore_errors=True)

    def write(self, step: int, model: torch.nn.Module, state: dict) -> Path:
        """Write ``step``'s checkpoint, then drop all but the ``keep`` newest."""
        from safetensors.torch import save_model

        target = self.folder / f"step-{step:07d}"
        previous = self.list()
        try:
            with atomic_dir(target) as tmp:
                write_json(tmp / "resume.json", {"step": step, "resume_key": state["resume_key"]})
                # save_model handles the tensors shared between generator and discriminator.
                save_model(model, str(tmp / "model.safetensors"))
                torch.save(state, tmp / "trainer_state.pt")
        except (OSError, RuntimeError) as exc:
            # A full disk or a quota (torch.save reports it as a RuntimeError): the half-written
            # copy is gone with its temporary folder; the older checkpoints were never touched.
            kept = f"{previous[-1]} is intact and a rerun resumes from it" if previous else "no earlier checkpoint"
            code = exc.errno if isinstance(exc, OSError) and exc.errno else errno.EIO
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
            raise OSError(code, f"pretrain: could not write checkpoint {target} ({why}); {kept}") from exc
        for old in self.list()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return target

    def read(self, path: Path, model: torch.nn.Module, device: torch.device) -> dict:
        """Load the weights into ``model``; return the trainer state."""
        from safetensors.torch import load_model

        load_model(model, str(path / "model.safetensors"), device=str(device))
        # weights_only: tensors and plain containers, no arbitrary pickled objects.
        return torch.load(path / "trainer_state.pt", map_location=device, weights_only=True)


@dataclass
class Resumed:
    """Where a resumed run carries on: the next step, the history logged so far, and from which folder."""

    step: int
    history: list[dict]
    path: Path


def rng_state(device: torch.device) -> dict:
    """This process's RNG states: torch's CPU generator, the device's CUDA one, NumPy's and Python's."""
    # NumPy's state as plain values and a tensor: the checkpoint is read with weights_only,
    # which refuses pickled NumPy arrays.
    mt = np.random.get_state(legacy=False)
    numpy_state = {"key": torch.from_numpy(mt["state"]["key"].astype(np.int64)), "pos": int(mt["state"]["pos"]),
                   "has_gauss": int(mt["has_gauss"]), "gauss": float(mt["gauss"])}
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    """Restore what :func:`rng_state` returned (the parts present: older checkpoints lack some)."""
    torch.set_rng_state(state["torch"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)
    if "numpy" in state:
        saved = state["numpy"]
        np.random.set_state({"bit_generator": "MT19937",
                             "state": {"key": saved["key"].cpu().numpy().astype(np.uint32), "pos": saved["pos"]},
                             "has_gauss": saved["has_gauss"], "gauss": saved["gauss"]})
    if "python" in state:
        random.setstate(state["python"])


def gather_rng_states(device: torch.device, world: int) -> list[dict]:
    """Every rank's :func:`rng_state`, in rank order. A collective when ``world`` > 1: all
    ranks must call it (only rank 0 uses the answer); one process needs no process group."""
    own = rng_state(device)
    if world <= 1:
        return [own]
    import torch.distributed as dist

    states: list = [None] * world
    dist.all_gather_object(states, {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in own.items()})
    return states


def reseed_for_rank(base: dict, rank: int, device: torch.device) -> None:
    """Seed every RNG from rank 0's saved state and ``rank``: streams that differ by rank,
    and the same on every rerun (the fallback when the world size changed)."""
    gen = torch.Generator().manual_seed(0)
    gen.set_state(base["torch"].cpu())
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen)) + 1_000_003 * rank
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _legacy_rng(state: dict) -> list[dict]:
    """The one RNG state of a checkpoint written before states were saved per rank."""
    one = {"torch": state["torch_rng"]}
    if "cuda_rng" in state:
        one["cuda"] = state["cuda_rng"]
    return [one]


class Checkpointer:
    """Owns the state a resume restores: the model, optimizer, scheduler, every rank's RNG
    states and data position (the step), with the history logged so far.

    ``rank`` and ``world`` default to the process group's when one is initialised (one
    process otherwise).
    """

    def __init__(self, folder: CheckpointFolder, key: str, model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, scheduler, device: torch.device,
                 rank: int | None = None, world: int | None = None) -> None:
        self.folder, self.key = folder, key
        self.model, self.optimizer, self.scheduler, self.device = model, optimizer, scheduler, device
        import torch.distributed as dist

        joined = dist.is_available() and dist.is_initialized()
        self.rank = rank if rank is not None else (dist.get_rank() if joined else 0)
        self.world = world if world is not None else (dist.get_world_size() if joined else 1)

    def gather_rng(self) -> list[dict]:
        """Every rank's RNG states for :meth:`save` (a collective: all ranks call it)."""
        return gather_rng_states(self.device, self.world)

    def save(self, step: int, history: list[dict], rng_states: list[dict] | None = None) -> Path:
        """Checkpoint the run as it is after ``step`` optimizer steps (rank 0 calls it).

        ``rng_states``: :meth:`gather_rng`'s answer; without it only this process's states
        are saved (right for one process; a multi-rank resume would then warn and reseed).
        """
        state = {
            "step": step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_states if rng_states is not None else [rng_state(self.device)],
            "history": history,
            "resume_key": self.key,
        }
        return self.folder.write(step, self.model, state)

    def resume(self) -> Resumed | None:
        """Restore the newest checkpoint of this configuration, if there is one; every rank
        calls it and restores its own RNG states."""
        path = self.folder.matching(self.key)
        if path is None:
            return None
        state = self.folder.read(path, self.model, self.device)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.restore_rng(state["rng"] if "rng" in state else _legacy_rng(state), path)
        return Resumed(int(state["step"]), list(state["history"]), path)

    def restore_rng(self, states: list[dict], path: Path) -> None:
        """This rank's saved RNG states, or (another world size) a reseed by rank, warned."""
        if len(states) == self.world:
            set_rng_state(states[self.rank], self.device)
            return
        if self.rank == 0:
            log.warning("pretrain: %s holds RNG states for %d process(es), this run has %d; each rank "
                        "reseeds from rank 0's state and its rank (dropout and sampling differ from an "
                        "uninterrupted run)", path, len(states), self.world)
        reseed_for_rank(states[0], self.rank, self.device)
