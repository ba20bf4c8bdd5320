"""Checkpoints and resume: everything a killed run needs to carry on as if never stopped.

A checkpoint is a folder ``step-NNNNNNN/`` holding

    model.safetensors   the weights (generator and discriminator, shared tensors once)
    trainer_state.pt    optimizer, scheduler, RNG states, the step and the logged history
    resume.json         the step and the resume key

written atomically (a half-written copy never appears under its final name). The data
position is the step alone: batches and their masking are functions of it
(``electra/pretraining/batches.py``). A checkpoint is resumed only by a run whose resume
key matches: the same configuration (fields that only change how the run is observed
excepted) over the same tokenized data.
"""

from __future__ import annotations

import errno
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from electra.core.config import PretrainConfig
from electra.core.files import atomic_dir, read_json, write_json
from electra.core.keys import content_key

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


class Checkpointer:
    """Owns the state a resume restores: the model, optimizer, scheduler, RNG states and
    data position (the step), with the history logged so far."""

    def __init__(self, folder: CheckpointFolder, key: str, model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, scheduler, device: torch.device) -> None:
        self.folder, self.key = folder, key
        self.model, self.optimizer, self.scheduler, self.device = model, optimizer, scheduler, device

    def save(self, step: int, history: list[dict]) -> Path:
        """Checkpoint the run as it is after ``step`` optimizer steps."""
        state = {
            "step": step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "history": history,
            "resume_key": self.key,
        }
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state()
        return self.folder.write(step, self.model, state)

    def resume(self) -> Resumed | None:
        """Restore the newest checkpoint of this configuration, if there is one."""
        path = self.folder.matching(self.key)
        if path is None:
            return None
        state = self.folder.read(path, self.model, self.device)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"].cpu())
        if self.device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"].cpu())
        return Resumed(int(state["step"]), list(state["history"]), path)
