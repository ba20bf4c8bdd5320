"""Where and how the models run: device choice, precision, and the LR schedule the stages share."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import torch


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` means CUDA when present, else CPU; anything else is passed to ``torch.device``."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# bf16 is chosen on a CPU only when its matmul beats fp32 by this factor: a near tie is
# noise, and flipping between runs would make results machine-noise dependent.
CPU_BF16_MIN_SPEEDUP = 1.25


@functools.cache
def cpu_bf16_speedup(n: int = 1024, repeats: int = 3) -> float:
    """fp32 time over bf16-autocast time of an ``n``^3 matmul on this CPU (best of ``repeats``).

    Flags alone do not say it: bf16 was 4x slower than fp32 on one earlier machine (no
    native bf16, emulated) and 6x faster on one with AMX. Measured once per process: on
    this 2-core AMX machine 1.5-3.3x over repeated runs (the autocast casts of both
    operands are timed too), in 0.1-0.2 s; a second or so where bf16 is emulated.
    """
    gen = torch.Generator().manual_seed(0)  # its own generator: the global RNG is not touched
    a = torch.randn(n, n, generator=gen)
    b = torch.randn(n, n, generator=gen)

    def best(dtype: torch.dtype | None) -> float:
        times = []
        for _ in range(repeats + 1):  # the first run warms the kernels up and is dropped
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
                a @ b
            times.append(time.perf_counter() - start)
        return min(times[1:])

    return best(None) / best(torch.bfloat16)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for fp32.

    ``bf16`` and ``fp32`` are honoured as given. ``auto``: bf16 on a CUDA device that
    supports it; on a CPU, bf16 only where :func:`cpu_bf16_speedup` measures it at least
    :data:`CPU_BF16_MIN_SPEEDUP` times faster than fp32.
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        raise ValueError(f"precision must be auto, bf16 or fp32, got {precision!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type != "cpu":
        return None
    return torch.bfloat16 if cpu_bf16_speedup() >= CPU_BF16_MIN_SPEEDUP else None


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """Autocast to ``dtype`` on ``device`` (``resolve_precision``'s answer); None: plain fp32."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def enable_tf32() -> bool:
    """Let fp32 matmuls and convolutions use TF32 tensor cores on CUDA (Ampere and later).

    What autocast leaves in fp32 (the losses, the optimizer, a run with precision fp32)
    then runs at tensor-core speed with a 10-bit mantissa, as the reference
    implementations train. A no-op without CUDA; returns whether it was set.
    """
    if not torch.cuda.is_available():
        return False
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):  # torch >= 2.9: the allow_tf32 flags are deprecated
        matmul.fp32_precision = "tf32"
        torch.backends.cudnn.conv.fp32_precision = "tf32"
    else:
        matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return True


def tf32_enabled() -> bool:
    """Whether CUDA fp32 matmuls may use TF32 now (see :func:`enable_tf32`)."""
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        return matmul.fp32_precision == "tf32"
    return bool(matmul.allow_tf32)


def linear_warmup_decay(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LR factor: linear warm-up to 1 over ``warmup_steps``, then linear decay to 0 at ``total_steps``."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return factor


def tune_cpu_allocator() -> bool:
    """Keep freed memory in the process (glibc malloc) instead of returning it to the OS.

    A CPU training step allocates and frees the same large activations every step;
    glibc hands big blocks back to the kernel (mmap/trim) and the next step pays a
    page fault per 4 KiB page again. Raising the mmap and trim thresholds keeps them:
    at ELECTRA-Small shapes the step's page faults halved and the step ran ~10% faster
    (bench/pretrain.py). Peak memory is unchanged (the same blocks are reused).
    Returns False where the C library is not glibc (nothing changed).
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # <malloc.h>
    ok = mallopt(m_trim_threshold, 1 << 36)  # never trim the heap top
    ok &= mallopt(m_top_pad, 1 << 28)        # grow the heap in 256 MiB strides
    ok &= mallopt(m_mmap_threshold, 1 << 30)  # blocks under 1 GiB come from the heap
    return bool(ok)
