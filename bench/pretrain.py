"""Pretraining step throughput: our ELECTRA step against an honest HF baseline, same run, same machine.

Each (variant, precision, batch) runs in its own subprocess (so peak memory is its own),
on the same random batches, and reports tokens/s over timed optimizer steps after
warm-up steps. The parent measures the matmul rate once (the MFU denominator for every
row), prints a table for people and, as its last line, one JSON object.

    python bench/pretrain.py                                   # Small, seq 128, batch 8 and 32
    python bench/pretrain.py --batch-size 32 --accum 4         # the Small recipe's batch 128
    python bench/pretrain.py --shapes tiny,base --seq-len 512 --precision bf16 --compile
    python bench/pretrain.py --batch-size 8 --profile          # where our step's time goes

The baseline ("naive") is what one builds the obvious way from HF transformers, as the
public implementations do: an ``ElectraForMaskedLM`` generator and an
``ElectraForPreTraining`` discriminator with shared embeddings, the generator's
full-vocabulary head at every position (that is what naive means here), its loss and the
multinomial sampling at the masked positions only, eager, torch's default AdamW. It runs
in the precision ours runs in (bf16 autocast where ours uses it) and, as a second row,
in fp32. Ours is ``ElectraPretrainer`` with the stage's optimizer (fused AdamW).

MFU is model FLOPs (electra.pretraining.flops: the useful work of our step, the same
numerator for every row) over the measured bf16 matmul rate of this machine; on a GPU
also over the chip's datasheet peak.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHAPES = {
    # name: (hidden, layers, heads, intermediate, embedding)
    "tiny": (128, 2, 2, 512, 128),
    "small": (256, 12, 4, 1024, 128),
    "base": (768, 12, 12, 3072, 768),
}
VOCAB = 30522
PAD, UNK, CLS, SEP, MASK = 0, 100, 101, 102, 103
MASK_PROB, MASK_TOKEN_PROB = 0.15, 0.85


def _model_config(shape: str):
    from electra.core.config import ModelConfig

    hidden, layers, heads, inter, emb = SHAPES[shape]
    return ModelConfig(hidden_size=hidden, num_layers=layers, num_heads=heads, intermediate_size=inter,
                       embedding_size=emb, max_position_embeddings=512, dropout=0.1)


def flops_per_token(shape: str, seq_len: int, mask_prob: float = MASK_PROB) -> float:
    """Training FLOPs per token of our step (the library's formula, see electra.pretraining.flops)."""
    from electra.pretraining.flops import training_flops_per_token

    return training_flops_per_token(_model_config(shape), seq_len, VOCAB, mask_prob)


def matmul_rate(device, dtype) -> float:
    """Measured dense matmul FLOP/s on this device and dtype (electra.pretraining.flops), best of two probes.

    8192^3 on CUDA (a small product is far below a big GPU's rate and would inflate MFU),
    2048^3 on the CPU. The best of two: a busy moment must not flatter MFU.
    """
    from electra.pretraining.flops import matmul_flops_per_s

    n = 8192 if device.type == "cuda" else 2048
    return max(matmul_flops_per_s(device, dtype, n=n, repeats=5) for _ in range(2))


def chip_peak(device) -> tuple[str, float | None]:
    """The device's name and its datasheet dense bf16 peak (electra.pretraining.flops; None on the CPU)."""
    import torch

    from electra.pretraining.flops import table_peak_flops

    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    return name, table_peak_flops(name, torch.bfloat16)


def _batches(n: int, batch_size: int, seq_len: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(1000, VOCAB, (batch_size, seq_len), generator=g)
        ids[:, 0] = CLS
        ids[:, seq_len // 2] = SEP
        ids[:, -1] = SEP
        out.append({"input_ids": ids, "token_type_ids": torch.zeros_like(ids),
                    "attention_mask": torch.ones_like(ids)})
    return out


class HFBaseline:
    """The plain HF build: full-vocabulary generator head at every position, loss and
    multinomial sampling at the masked positions only (as the public implementations do)."""

    def __init__(self, shape: str):
        from transformers import ElectraForMaskedLM, ElectraForPreTraining

        from electra.pretraining.model import discriminator_config, generator_config

        cfg = _model_config(shape)
        self.generator = ElectraForMaskedLM(generator_config(cfg, VOCAB))
        self.discriminator = ElectraForPreTraining(discriminator_config(cfg, VOCAB))
        self.generator.electra.embeddings = self.discriminator.electra.embeddings
        self.generator.generator_lm_head.weight = self.discriminator.electra.embeddings.word_embeddings.weight

    def parameters(self):
        seen = {}
        for module in (self.generator, self.discriminator):
            for p in module.parameters():
                seen[id(p)] = p
        return list(seen.values())

    def to(self, device):
        self.generator.to(device)
        self.discriminator.to(device)
        return self

    def step_loss(self, batch):
        import torch
        import torch.nn.functional as F

        ids = batch["input_ids"]                                           # [B, L]
        special = torch.isin(ids, torch.tensor([PAD, UNK, CLS, SEP, MASK], device=ids.device))
        prob = torch.full(ids.shape, MASK_PROB, device=ids.device).masked_fill(special, 0.0)
        is_masked = torch.bernoulli(prob).bool()
        shown_as_mask = is_masked & (torch.rand(ids.shape, device=ids.device) < MASK_TOKEN_PROB)
        masked = ids.masked_fill(shown_as_mask, MASK)
        logits = self.generator(masked, attention_mask=batch["attention_mask"],
                                token_type_ids=batch["token_type_ids"]).logits  # [B, L, V] everywhere
        masked_logits = logits[is_masked].float()                         # [M, V]
        gen_loss = F.cross_entropy(masked_logits, ids[is_masked])
        probs = torch.softmax(masked_logits.detach(), dim=-1)
        sampled = torch.multinomial(probs, 1).squeeze(-1)                  # [M]
        corrupted = ids.clone()
        corrupted[is_masked] = sampled
        disc = self.discriminator(corrupted, attention_mask=batch["attention_mask"],
                                  token_type_ids=batch["token_type_ids"], labels=(corrupted != ids).long())
        return gen_loss + 50.0 * disc.loss.float()


def _randomness(step: int, micro: int, batch_size: int, accum: int, device) -> dict:
    """The randomness argument of our forward, as the stage draws it: ``row_keys=``, one
    int64 key per example's stream position (electra.pretraining.batches.row_keys)."""
    from electra.pretraining import batches

    return {"row_keys": batches.row_keys(step, micro, batch_size, accum, 0, range(batch_size)).to(device)}


def _stage_optimizer(model, device):
    """The pretrain stage's optimizer (fused AdamW, no decay on LayerNorm/biases) at the bench's lr."""
    from electra.core.config import PretrainConfig
    from electra.pretraining.trainer import build_optimizer

    return build_optimizer(model, PretrainConfig(lr=1e-4), device)


def _build(args, device):
    """(module, loss_of(batch, step, micro), params, optimizer, autocast dtype or None)."""
    import torch

    from electra.core.runtime import resolve_precision

    autocast = resolve_precision(args.precision, device)
    if args.variant == "ours":
        from electra.core.runtime import tune_cpu_allocator
        from electra.pretraining.model import ElectraPretrainer

        if device.type == "cpu":
            tune_cpu_allocator()  # as the pretrain stage does
        model = ElectraPretrainer(_model_config(args.shape), VOCAB, PAD, MASK, [PAD, UNK, CLS, SEP, MASK]).to(device)
        step_model = torch.compile(model) if args.compile else model
        optimizer = _stage_optimizer(model, device)

        def loss_of(batch, step, micro):
            rnd = _randomness(step, micro, args.batch_size, args.accum, device)
            return step_model(**batch, **rnd).loss
        return model, loss_of, list(model.parameters()), optimizer, autocast
    model = HFBaseline(args.shape).to(device)
    params = model.parameters()
    # The obvious optimizer: AdamW with torch's defaults (fused only where that is the habit, CUDA).
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda")
    return model, (lambda batch, step, micro: model.step_loss(batch)), params, optimizer, autocast


def _optimizer_step(loss_of, params, optimizer, micro_batches, step: int, autocast, device):
    """One optimizer step over ``accum`` micro-batches; returns the summed loss (on the device)."""
    import torch

    total = torch.zeros((), device=device)
    for micro, batch in enumerate(micro_batches):
        with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
            loss = loss_of(batch, step, micro) / len(micro_batches)
        loss.backward()
        total += loss.detach()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total


def _profile_table(run_steps, rows: int = 15) -> str:
    """torch.profiler over ``run_steps()``: the top ops by self CPU time, and the total."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run_steps()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1
    lines = [f"{'op':<44} {'self CPU ms':>12} {'share':>7} {'calls':>7}"]
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:rows]:
        lines.append(f"{e.key[:44]:<44} {e.self_cpu_time_total / 1000:>12.1f} "
                     f"{100 * e.self_cpu_time_total / total:>6.1f}% {e.count:>7}")
    lines.append(f"{'total':<44} {total / 1000:>12.1f}")
    return "\n".join(lines)


def run_variant(args) -> dict:
    """Run one variant in this process and return its numbers."""
    import torch

    from electra.core.runtime import resolve_device

    torch.manual_seed(0)
    device = resolve_device(args.device)
    model, loss_of, params, optimizer, autocast = _build(args, device)
    micro = _batches((args.warmup + args.steps) * args.accum, args.batch_size, args.seq_len)
    if args.variant == "ours" and inspect.signature(model.forward).parameters["attention_mask"].default is None:
        # As the stage's batches: no attention mask when nothing is padded (SDPA may then take
        # its flash kernels), decided on the host. The baseline keeps the mask, as the
        # public implementations pass it.
        micro = [{k: v for k, v in b.items() if k != "attention_mask" or not bool(v.all())} for b in micro]
    micro = [{k: v.to(device) for k, v in b.items()} for b in micro]
    steps = [micro[i * args.accum:(i + 1) * args.accum] for i in range(args.warmup + args.steps)]

    def run(first: int, last: int) -> list:
        return [_optimizer_step(loss_of, params, optimizer, steps[i], i, autocast, device) for i in range(first, last)]

    run(0, args.warmup)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    losses = run(args.warmup, args.warmup + args.steps)
    final_loss = float(losses[-1])  # one sync at the end, none per step
    elapsed = time.perf_counter() - start
    profile = _profile_table(lambda: run(0, min(3, args.warmup + args.steps))) if args.profile else None
    tokens = args.steps * args.accum * args.batch_size * args.seq_len
    return {
        "variant": args.variant,
        "shape": args.shape,
        "batch_size": args.batch_size,
        "accum": args.accum,
        "compiled": bool(args.compile and args.variant == "ours"),
        "tokens_per_s": tokens / elapsed,
        "step_s": elapsed / args.steps,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
        "precision": "fp32" if autocast is None else str(autocast).replace("torch.bfloat16", "bf16").replace("torch.", ""),
        "model_flops_per_token": flops_per_token(args.shape, args.seq_len),
        "final_loss": final_loss,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "profile": profile,
    }


def _spawn(args, variant: str, shape: str, precision: str, batch_size: int, compiled: bool) -> dict:
    cmd = [sys.executable, __file__, "--variant", variant, "--shape", shape, "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--batch-size", str(batch_size), "--accum", str(args.accum),
           "--seq-len", str(args.seq_len), "--precision", precision, "--device", args.device]
    cmd += (["--compile"] if compiled else []) + (["--profile"] if args.profile and variant == "ours" else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if proc.returncode != 0:
        raise RuntimeError(f"{variant}/{shape}/{precision}/batch {batch_size} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _variants(args) -> list[tuple[str, str, bool]]:
    """(variant, precision, compiled) to run: ours, the baseline in ours' precision, the baseline in fp32."""
    import torch

    from electra.core.runtime import resolve_device, resolve_precision

    ours = "bf16" if resolve_precision(args.precision, resolve_device(args.device)) == torch.bfloat16 else "fp32"
    out = [("ours", ours, False)]
    if args.compile:
        out.append(("ours", ours, True))
    if not args.no_baseline:
        out.append(("naive", ours, False))
        if ours != "fp32":
            out.append(("naive", "fp32", False))
    return out


def _print_rows(rows: list[dict], peak: float, chip: float | None) -> None:
    memory = "peak GPU MB" if rows and rows[0]["peak_gpu_mb"] is not None else "peak RSS MB"
    print(f"{'shape':<6} {'batch':>9} {'variant':<14} {'prec':<9} {'tokens/s':>10} {'step ms':>9} "
          f"{'GFLOP/s':>9} {'MFU':>7}" + (f" {'MFU chip':>9}" if chip else "") + f" {memory:>12}")
    for r in rows:
        achieved = r["tokens_per_s"] * r["model_flops_per_token"]
        used = r["peak_gpu_mb"] if r["peak_gpu_mb"] is not None else r["peak_rss_mb"]
        name = r["variant"] + (" compiled" if r["compiled"] else "")
        batch = f"{r['batch_size']}x{r['accum']}" if r["accum"] > 1 else str(r["batch_size"])
        print(f"{r['shape']:<6} {batch:>9} {name:<14} {r['precision']:<9} {r['tokens_per_s']:>10.0f} "
              f"{1000 * r['step_s']:>9.1f} {achieved / 1e9:>9.1f} {100 * achieved / peak:>6.2f}%"
              + (f" {100 * achieved / chip:>8.2f}%" if chip else "") + f" {used:>12.0f}")


def _ratio_line(group: list[dict]) -> str:
    ours = next(r for r in group if r["variant"] == "ours" and not r["compiled"])
    best = max((r for r in group if r["variant"] == "ours"), key=lambda r: r["tokens_per_s"])
    same = next((r for r in group if r["variant"] == "naive" and r["precision"] == ours["precision"]), None)
    fp32 = next((r for r in group if r["variant"] == "naive" and r["precision"] == "fp32"), None)
    parts = [f"ours/baseline({b['precision']}) = {best['tokens_per_s'] / b['tokens_per_s']:.2f}x tokens/s, "
             f"{ours['peak_rss_mb'] / b['peak_rss_mb']:.2f}x peak RSS" for b in ([same] if fp32 is same else [same, fp32]) if b is not None]
    return f"{ours['shape']:<6} batch {ours['batch_size']}x{ours['accum']}: ratio " + "; ".join(parts)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="small", help="comma list of tiny, small, base")
    parser.add_argument("--batch-size", default="8,32", help="comma list of micro-batch sizes")
    parser.add_argument("--accum", type=int, default=1, help="micro-batches per optimizer step (--batch-size 32 "
                        "--accum 4: the Small recipe's batch 128); figures are per optimizer step")
    parser.add_argument("--steps", type=int, default=4, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed optimizer steps first")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="ours' precision (auto: bf16 where the hardware has it); the baseline runs in it and in fp32")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true", help="also run our step under torch.compile")
    parser.add_argument("--no-baseline", action="store_true", help="ours only")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's top ops of our step")
    parser.add_argument("--variant", choices=["ours", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--shape", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.variant:  # child process: one variant, one JSON line
        args.batch_size = int(args.batch_size)
        print(json.dumps(run_variant(args)))
        return

    import torch

    from electra.core.runtime import resolve_device

    device = resolve_device(args.device)
    device_name, chip = chip_peak(device)
    peak = matmul_rate(device, torch.bfloat16)
    print(f"device {device_name}: measured bf16 matmul {peak / 1e12:.2f} TFLOP/s"
          + (f", datasheet dense bf16 peak {chip / 1e12:.0f} TFLOP/s" if chip else ""), flush=True)
    groups = []
    for shape in [s.strip() for s in args.shapes.split(",") if s.strip()]:
        for batch_size in [int(b) for b in str(args.batch_size).split(",") if b.strip()]:
            group = [_spawn(args, v, shape, p, batch_size, c) for v, p, c in _variants(args)]
            for r in group:
                achieved = r["tokens_per_s"] * r["model_flops_per_token"]
                r["mfu"], r["mfu_chip"] = achieved / peak, (achieved / chip if chip else None)
            groups.append(group)
            _print_rows(group, peak, chip)
            if len(group) > 1 and any(r["variant"] == "naive" for r in group):
                print(_ratio_line(group))
            for r in group:
                if r["profile"]:
                    print(f"where our step's time goes ({shape}, batch {batch_size}x{args.accum}, {r['precision']}, "
                          f"{'compiled' if r['compiled'] else 'eager'}; self CPU time):\n{r['profile']}")
            print(flush=True)
    print(json.dumps(_summary(args, groups, device_name, peak, chip)))


def _summary(args, groups: list[list[dict]], device_name: str, peak: float, chip: float | None) -> dict:
    """The last (largest) configuration's figures, and every row under ``all``."""
    group = groups[-1]
    ours = max((r for r in group if r["variant"] == "ours"), key=lambda r: r["tokens_per_s"])
    same = next((r for r in group if r["variant"] == "naive" and r["precision"] == ours["precision"]), None)
    fp32 = next((r for r in group if r["variant"] == "naive" and r["precision"] == "fp32"), None)
    for r in (r for g in groups for r in g):
        r.pop("profile", None)
    return {
        "ours_tokens_per_s": ours["tokens_per_s"],
        "baseline_tokens_per_s": same["tokens_per_s"] if same else None,
        "ratio": ours["tokens_per_s"] / same["tokens_per_s"] if same else None,
        "baseline_fp32_tokens_per_s": fp32["tokens_per_s"] if fp32 else None,
        "ratio_fp32_baseline": ours["tokens_per_s"] / fp32["tokens_per_s"] if fp32 else None,
        "ours_peak_rss_mb": ours["peak_rss_mb"],
        "baseline_peak_rss_mb": same["peak_rss_mb"] if same else None,
        "ours_peak_gpu_mb": ours["peak_gpu_mb"],
        "baseline_peak_gpu_mb": same["peak_gpu_mb"] if same else None,
        "model_flops_per_token": ours["model_flops_per_token"],
        "matmul_flops": peak,
        "chip_peak_flops": chip,
        "mfu": ours["mfu"],
        "mfu_chip": ours["mfu_chip"],
        "baseline_mfu": same["mfu"] if same else None,
        "shapes": ours["shape"],
        "device": device_name,
        "precision": ours["precision"],
        "batch_size": ours["batch_size"],
        "accum": args.accum,
        "seq_len": args.seq_len,
        "all": [r for g in groups for r in g],
    }


if __name__ == "__main__":
    main()
