"""Data-parallel pretraining under torchrun: joining the process group, each rank's
share of the global batch, the loss as one process would compute it, and the
collective answers every rank must agree on (should we stop? wait for rank 0).

Launched plainly (no ``WORLD_SIZE``), the world is one process and every function here
is a no-op or the identity, so the trainer reads the same either way.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from electra.core.runtime import resolve_device, tune_cpu_allocator


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun launch (world 1 when launched plainly)."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def rows(self, batch_size: int) -> range:
        """This rank's rows of each global batch of ``batch_size`` (a contiguous slice)."""
        per_rank = batch_size // self.world
        return range(self.rank * per_rank, (self.rank + 1) * per_rank)


def init_distributed(device_name: str) -> Distributed:
    """Join the process group that torchrun describes in the environment (nccl on GPU, gloo on CPU)."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    ctx = Distributed(world, int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")))
    use_cuda = torch.cuda.is_available() and device_name != "cpu"
    if use_cuda:
        torch.cuda.set_device(ctx.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return ctx


def place_process(device_name: str, batch_size: int) -> tuple[Distributed, torch.device]:
    """Join the launch, then pick this rank's device (its own GPU under torchrun).

    The global batch must split evenly: ranks with unequal slices would weigh their
    examples differently in the averaged gradient.
    """
    ctx = init_distributed(device_name)
    device = resolve_device(device_name)
    if ctx.world > 1:
        if batch_size % ctx.world:
            raise ValueError(f"pretrain.batch_size ({batch_size}) must divide evenly over {ctx.world} processes")
        if device.type == "cuda":
            device = torch.device("cuda", ctx.local_rank)
    if device.type == "cpu":
        tune_cpu_allocator()
    return ctx, device


def run_compiled(cfg, device: torch.device) -> bool:
    """Whether the step is compiled: ``pretrain.compile`` true/false, or ``auto``: on CUDA only.

    The step has static shapes and no graph break, so one compilation serves the run;
    on this CPU compiling did not pay off (docs/static-step.md).
    """
    return device.type == "cuda" if cfg.compile == "auto" else bool(cfg.compile)


def wrap_for_training(model: torch.nn.Module, ctx: Distributed, device: torch.device, compile: bool) -> torch.nn.Module:
    """The module the step calls: DDP over ranks, then ``torch.compile`` when asked.

    The wrappers share parameters with ``model``; checkpoints and exports use ``model``.
    """
    step_model = model
    if ctx.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        step_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if compile:
        step_model = torch.compile(step_model)
    return step_model


def gradient_sync(step_model: torch.nn.Module, ctx: Distributed, last_micro: bool):
    """Gradients are all-reduced on the last micro-batch of a step only (DDP's ``no_sync`` before it)."""
    if ctx.world == 1 or last_micro:
        return contextlib.nullcontext()
    return step_model.no_sync()


def global_mean_loss(out, ctx: Distributed, generator_weight: float, discriminator_weight: float) -> torch.Tensor:
    """The loss as one process would compute it over the global batch.

    Each rank holds a slice; its sums are divided by the global token counts and
    scaled by the world size, because DDP averages gradients over ranks.
    """
    import torch.distributed as dist

    counts = torch.stack([out.masked_count, out.active_count]).to(out.generator_loss_sum.device, torch.float32)
    dist.all_reduce(counts)
    generator = out.generator_loss_sum / counts[0].clamp(min=1)
    if out.is_replaced is None:  # objective "mlm": the masked-LM loss alone
        return ctx.world * generator
    discriminator = out.discriminator_loss_sum / counts[1].clamp(min=1)
    return ctx.world * (generator_weight * generator + discriminator_weight * discriminator)


def any_rank(flag: bool, ctx: Distributed) -> bool:
    """True on every rank when ``flag`` is true on any (a SIGTERM reaches one process first)."""
    if ctx.world == 1:
        return flag
    import torch.distributed as dist

    value = torch.tensor([1.0 if flag else 0.0])
    if dist.get_backend() == "nccl":
        value = value.cuda()
    dist.all_reduce(value)
    return bool(value.item() > 0)


def barrier(ctx: Distributed) -> None:
    """Wait for every rank (rank 0 writes checkpoints; the others must not run ahead of it)."""
    if ctx.world > 1:
        import torch.distributed as dist

        dist.barrier()
