"""Pretraining step throughput: our ELECTRA step against a naive HF baseline, same run, same machine.

Each variant runs in its own subprocess (so peak memory is its own), on the same
random batches, and reports tokens/s over timed steps after warm-up steps. The
parent prints a table for people and, as its last line, one JSON object.

    python bench/pretrain.py                       # tiny and small shapes, CPU or GPU
    python bench/pretrain.py --shapes small --batch-size 8 --steps 10
    python bench/pretrain.py --shapes base --seq-len 512 --precision bf16 --compile

The naive baseline is what one builds the obvious way from HF transformers: the
generator's full-vocabulary head and loss over every position, multinomial
sampling from softmax probabilities, fp32, eager, separate HF loss calls.
"""

from __future__ import annotations

import argparse
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


def _model_config(shape: str):
    from electra.core.config import ModelConfig

    hidden, layers, heads, inter, emb = SHAPES[shape]
    return ModelConfig(hidden_size=hidden, num_layers=layers, num_heads=heads, intermediate_size=inter,
                       embedding_size=emb, max_position_embeddings=512, dropout=0.1)


def flops_per_token(shape: str, seq_len: int, mask_prob: float = 0.15) -> float:
    """Training FLOPs per token of our step (the library's formula, see electra.pretraining.flops)."""
    from electra.pretraining.flops import training_flops_per_token

    return training_flops_per_token(_model_config(shape), seq_len, VOCAB, mask_prob)


def matmul_rate(device, dtype) -> float:
    """Measured dense matmul FLOP/s on this device and dtype (the MFU denominator)."""
    from electra.pretraining.flops import matmul_flops_per_s

    return matmul_flops_per_s(device, dtype, n=2048, repeats=5)


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


class NaiveElectra:
    """The obvious HF build: full-vocabulary generator head, multinomial sampling, fp32."""

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

        ids = batch["input_ids"]
        special = torch.isin(ids, torch.tensor([PAD, CLS, SEP], device=ids.device))
        prob = torch.full(ids.shape, 0.15, device=ids.device).masked_fill(special, 0.0)
        is_masked = torch.bernoulli(prob).bool()
        masked = ids.masked_fill(is_masked & (torch.rand(ids.shape, device=ids.device) < 0.85), MASK)
        labels = ids.masked_fill(~is_masked, -100)
        gen = self.generator(masked, attention_mask=batch["attention_mask"],
                             token_type_ids=batch["token_type_ids"], labels=labels)
        probs = torch.softmax(gen.logits.detach(), dim=-1)                 # [B, L, V] everywhere
        sampled = torch.multinomial(probs.view(-1, VOCAB), 1).view(ids.shape)
        corrupted = torch.where(is_masked, sampled, ids)
        disc = self.discriminator(corrupted, attention_mask=batch["attention_mask"],
                                  token_type_ids=batch["token_type_ids"], labels=(corrupted != ids).long())
        return gen.loss + 50.0 * disc.loss


def run_variant(args) -> dict:
    """Run one variant in this process and return its numbers."""
    import torch

    from electra.pretraining.model import ElectraPretrainer
    from electra.core.runtime import resolve_device, resolve_precision

    torch.manual_seed(0)
    device = resolve_device(args.device)
    if args.variant == "ours":
        from electra.core.config import PretrainConfig
        from electra.pretraining.batches import row_generators
        from electra.pretraining.trainer import build_optimizer
        from electra.core.runtime import tune_cpu_allocator

        if device.type == "cpu":
            tune_cpu_allocator()  # as the pretrain stage does
        autocast = resolve_precision(args.precision, device)
        model = ElectraPretrainer(_model_config(args.shape), VOCAB, PAD, MASK, [PAD, UNK, CLS, SEP, MASK]).to(device)
        step_model = torch.compile(model) if args.compile else model
        params = list(model.parameters())
        # The stage's optimizer (fused AdamW, no decay on LayerNorm/biases) at the bench's lr.
        optimizer = build_optimizer(model, PretrainConfig(lr=1e-4), device)

        rows = range(args.batch_size)

        def loss_of(batch, step):
            # Per-example random streams, as the stage draws them (exact resume, DDP = 1 process).
            generators = row_generators(step, 0, args.batch_size, 1, 0, rows, device)
            with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
                return step_model(**batch, generator=generators).loss
    else:
        autocast = None
        model = NaiveElectra(args.shape).to(device)
        params = model.parameters()
        loss_of = lambda batch, step: model.step_loss(batch)  # noqa: E731
        # The obvious optimizer: AdamW with torch's defaults (fused only where that is the habit, CUDA).
        optimizer = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda")
    batches = [{k: v.to(device) for k, v in b.items()} for b in _batches(args.warmup + args.steps, args.batch_size, args.seq_len)]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    losses = []
    for i, batch in enumerate(batches):
        if i == args.warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        loss = loss_of(batch, i)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss))
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    tokens = args.steps * args.batch_size * args.seq_len
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rate_dtype = autocast or torch.float32
    peak = matmul_rate(device, rate_dtype)
    tps = tokens / elapsed
    return {
        "variant": args.variant,
        "shape": args.shape,
        "tokens_per_s": tps,
        "step_s": elapsed / args.steps,
        "peak_rss_mb": peak_rss_mb,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
        "precision": str(rate_dtype).replace("torch.", ""),
        "matmul_flops": peak,
        "model_flops_per_token": flops_per_token(args.shape, args.seq_len),
        "mfu": tps * flops_per_token(args.shape, args.seq_len) / peak,
        "final_loss": losses[-1],
        "device": str(device),
        "threads": torch.get_num_threads(),
    }


def _spawn(args, variant: str, shape: str) -> dict:
    cmd = [sys.executable, __file__, "--variant", variant, "--shape", shape, "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len),
           "--precision", args.precision, "--device", args.device] + (["--compile"] if args.compile else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if proc.returncode != 0:
        raise RuntimeError(f"{variant}/{shape} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="tiny,small")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true", help="torch.compile our step")
    parser.add_argument("--variant", choices=["ours", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--shape", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:  # child process: one variant, one JSON line
        print(json.dumps(run_variant(args)))
        return

    rows = []
    for shape in [s.strip() for s in args.shapes.split(",") if s.strip()]:
        ours = _spawn(args, "ours", shape)
        naive = _spawn(args, "naive", shape)
        # One denominator for both: the best matmul rate either process measured (a
        # busy moment in one process must not flatter its MFU).
        if ours["precision"] == naive["precision"]:
            rate = max(ours["matmul_flops"], naive["matmul_flops"])
            for r in (ours, naive):
                r["matmul_flops"] = rate
                r["mfu"] = r["tokens_per_s"] * r["model_flops_per_token"] / rate
        rows.append((shape, ours, naive))
    memory = "peak GPU MB" if rows and rows[0][1]["peak_gpu_mb"] is not None else "peak RSS MB"
    print(f"{'shape':<6} {'variant':<6} {'prec':<9} {'tokens/s':>10} {'step ms':>9} {'GFLOP/s':>9} "
          f"{'matmul GFLOP/s':>15} {'MFU':>7} {memory:>12}")
    for shape, ours, naive in rows:
        for r in (ours, naive):
            achieved = r["tokens_per_s"] * r["model_flops_per_token"]
            used = r["peak_gpu_mb"] if r["peak_gpu_mb"] is not None else r["peak_rss_mb"]
            print(f"{shape:<6} {r['variant']:<6} {r['precision']:<9} {r['tokens_per_s']:>10.0f} "
                  f"{1000 * r['step_s']:>9.1f} {achieved / 1e9:>9.1f} {r['matmul_flops'] / 1e9:>15.1f} "
                  f"{100 * r['mfu']:>6.2f}% {used:>12.0f}")
        print(f"{shape:<6} model FLOPs/token {ours['model_flops_per_token'] / 1e6:.1f} M (ours' step; the naive "
              f"step does more work for the same tokens, MFU counts only the useful FLOPs)")
        print(f"{shape:<6} ratio  ours/naive tokens/s = {ours['tokens_per_s'] / naive['tokens_per_s']:.2f}x, "
              f"peak RSS {ours['peak_rss_mb'] / naive['peak_rss_mb']:.2f}x"
              + (f", peak GPU memory {ours['peak_gpu_mb'] / naive['peak_gpu_mb']:.2f}x" if ours["peak_gpu_mb"] else ""))
    main_shape, ours, naive = rows[-1]
    summary = {
        "ours_tokens_per_s": ours["tokens_per_s"],
        "baseline_tokens_per_s": naive["tokens_per_s"],
        "ratio": ours["tokens_per_s"] / naive["tokens_per_s"],
        "ours_peak_rss_mb": ours["peak_rss_mb"],
        "baseline_peak_rss_mb": naive["peak_rss_mb"],
        "ours_peak_gpu_mb": ours["peak_gpu_mb"],
        "baseline_peak_gpu_mb": naive["peak_gpu_mb"],
        "model_flops_per_token": ours["model_flops_per_token"],
        "matmul_flops": ours["matmul_flops"],
        "mfu": ours["mfu"],
        "baseline_mfu": naive["mfu"],
        "shapes": main_shape,
        "device": ours["device"],
        "precision": ours["precision"],
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "all": [{"shape": s, "ours": o, "naive": n} for s, o, n in rows],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
