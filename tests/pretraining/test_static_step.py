"""The pretraining step for a GPU: static shapes, counter-based randomness, one host sync, one graph.

What a GPU needs from the step (issue 21) pinned on CPU-sized models: the masked slots
have a fixed count P per row whatever the batch, padded slots weigh nothing, every draw
is a function of the example's key, the optimizer step reads back exactly one value (the
non-finite guard), and ``torch._dynamo`` captures the model's step without a graph break.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from electra.core.config import PretrainConfig
from electra.pretraining.batches import load_batch, row_keys, token_count
from electra.pretraining.distributed import Distributed, run_compiled
from electra.pretraining.flops import PeakFlops
from electra.pretraining.model import _as_int32, choose_masked, max_predictions, mix32, uniforms
from tests.pretraining.test_objective import MASK, VOCAB, batch, special, tiny_model


def test_every_batch_has_the_same_number_of_slots_and_padded_slots_weigh_nothing():
    model = tiny_model().eval()
    keys = torch.arange(8) * 7919 + 3
    seen = []
    handle = model.generator.generator_lm_head.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        short = model(**batch(pad_tail=30), row_keys=keys)        # 2 maskable tokens a row
        full = model(**batch(pad_tail=0), row_keys=keys)
        model.max_predictions = 12                                  # 6 more padded slots per row
        wide = model(**batch(pad_tail=0), row_keys=keys)
    handle.remove()
    assert seen[0] == seen[1] == torch.Size([8, 6, VOCAB]) and seen[2] == torch.Size([8, 12, VOCAB])
    assert short.masked_count == 8 * 1 and full.masked_count == 8 * 6
    # Slot k's draws do not depend on P: extra slots change nothing but the shapes.
    assert torch.equal(full.is_replaced, wide.is_replaced) and full.masked_count == wide.masked_count
    assert torch.allclose(full.loss, wide.loss, rtol=1e-6)


def test_the_default_slot_count_never_truncates_a_row():
    for length in (1, 7, 20, 40, 128, 512):
        for prob in (0.01, 0.15, 0.5, 0.99):
            assert round(length * prob) <= max_predictions(length, prob) <= length
    ids = batch(b=16, length=128, pad_tail=0)["input_ids"]
    m = choose_masked(ids, special(ids), MASK, torch.arange(16), 0.15, 0.85)
    assert torch.equal(m.valid.sum(1), torch.round((~special(ids)).sum(1).float() * 0.15).long())


def test_counter_based_uniforms_are_uniform_fp32_and_independent_per_row():
    keys = torch.tensor([0, 1, -5, 2**62 + 1])
    u = uniforms(keys, 2, 200_000)
    assert u.dtype == torch.float32 and 0.0 < u.min() and u.max() < 1.0
    counts = torch.histc(u, bins=10, min=0.0, max=1.0) / u[0].numel()       # per row: 10 bins
    assert torch.allclose(counts / len(keys), torch.full((10,), 0.1), atol=0.003)
    assert abs(torch.corrcoef(u)[0, 1]) < 0.01                             # rows: independent
    assert abs(torch.corrcoef(torch.stack([u[0, :-1], u[0, 1:]]))[0, 1]) < 0.01  # neighbours too
    # The in-place int32 hash is the int64 one, bit for bit (products wrap, shifts masked).
    x = torch.randint(0, 2**32, (4096,))
    assert torch.equal(mix32(_as_int32(x)), _as_int32(mix32(x)))
    # Row b depends on its key only, and a draw index gives another stream.
    assert torch.equal(uniforms(keys[2:3], 2, 1000), u[2:3, :1000])
    assert not torch.equal(uniforms(keys, 1, 1000), u[:, :1000])


def test_row_keys_are_a_function_of_the_stream_position():
    whole = row_keys(3, 1, 8, 2, 1234, range(0, 8))
    assert torch.equal(row_keys(3, 1, 8, 2, 1234, range(4, 8)), whole[4:])    # rank 1 of 2: its slice
    # Stream position (step * accum + micro) * batch + row: (3, 1) with accum 2, batch 8 is rows 56..63.
    assert torch.equal(row_keys(0, 0, 64, 1, 1234, range(56, 64)), whole)
    assert not torch.equal(row_keys(3, 1, 8, 2, 1235, range(0, 8)), whole)
    assert len(set(row_keys(0, 0, 4096, 1, 1, range(4096)).tolist())) == 4096


def test_a_batch_without_padding_has_no_attention_mask():
    class Shards:
        def get(self, indices):
            ids = np.full((len(indices), 6), 7, dtype=np.int64)
            ids[indices == 1, 4:] = 0                                   # example 1 ends in padding
            return ids, np.zeros_like(ids)

    full = load_batch(Shards(), np.array([0]), pad_id=0)
    padded = load_batch(Shards(), np.array([0, 1]), pad_id=0)
    assert "attention_mask" not in full and token_count(full) == 6
    assert padded["attention_mask"].tolist() == [[1] * 6, [1, 1, 1, 1, 0, 0]] and token_count(padded) == 10


def test_compile_auto_is_on_where_cuda():
    cfg = PretrainConfig()
    assert cfg.compile == "auto"
    assert run_compiled(cfg, torch.device("cuda")) and not run_compiled(cfg, torch.device("cpu"))
    assert run_compiled(PretrainConfig(compile=True), torch.device("cpu"))
    assert not run_compiled(PretrainConfig(compile=False), torch.device("cuda"))


# --- host syncs -------------------------------------------------------------------------

READ_BACKS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu")


class _Batches:
    """Stands in for the prefetcher: host batches with row keys, as training_batches gives them."""

    def __init__(self, micro_batch: int, accum: int) -> None:
        self.micro_batch, self.accum = micro_batch, accum

    def next(self, key):
        step, micro = key
        b = batch(b=self.micro_batch, seed=step * self.accum + micro, pad_tail=10 * (micro % 2))
        if micro % 2 == 0:
            b.pop("attention_mask")                                   # a batch without padding
        b["row_keys"] = row_keys(step, micro, self.micro_batch, self.accum, 1234, range(self.micro_batch))
        return b


def _run(tmp_path, accum: int):
    from electra.core.tracking import NullLogger
    from electra.pretraining.checkpoint import CheckpointFolder
    from electra.pretraining.trainer import (MetricsWindow, NonFinitePolicy, Run, build_optimizer,
                                             linear_schedule)

    cfg = PretrainConfig(batch_size=4, grad_accum_steps=accum, device="cpu", precision="fp32", max_steps=10)
    model = tiny_model()
    model.train()
    optimizer = build_optimizer(model, cfg, torch.device("cpu"))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(cfg.warmup_steps, cfg.max_steps))
    run = Run(cfg, Distributed(), torch.device("cpu"), None, None, None, None, None, model, model, optimizer,
              scheduler, 1.0, 1.0, NullLogger())
    return run, MetricsWindow(1.0, PeakFlops("cpu", None, 1.0)), NonFinitePolicy("stop", CheckpointFolder(tmp_path, 2))


def test_an_optimizer_step_reads_back_one_value_the_non_finite_guard(tmp_path, monkeypatch):
    from electra.pretraining.trainer import train_step

    run, window, policy = _run(tmp_path, accum=2)
    batches = _Batches(4, 2)
    train_step(run, batches, 0, window, policy)                     # warm-up: lazy inits may read back
    calls: list[str] = []
    for name in READ_BACKS:
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counting)
    for step in (1, 2, 3):
        train_step(run, batches, step, window, policy)
    monkeypatch.undo()
    assert calls == ["__bool__"] * 3, calls                          # bool(finite), once per step
    row = window.row(3, 0.1, 0, torch.tensor(1.0))                   # the log step reads the window
    assert row["loss"] > 0 and 0 <= row["discriminator_accuracy"] <= 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="sync debug mode needs CUDA")
def test_on_cuda_the_step_runs_clean_under_sync_debug_mode():
    model = tiny_model().cuda().train()
    b = {k: v.cuda() for k, v in batch(pad_tail=0).items() if k != "attention_mask"}
    keys = torch.arange(8, device="cuda")
    model(**b, row_keys=keys).loss.backward()                        # warm-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = model(**b, row_keys=keys)
        out.loss.backward()
        finite = torch.isfinite(out.loss.detach())
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert bool(finite)


# --- torch.compile ------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.timeout(240)
def test_dynamo_captures_the_training_forward_and_loss_in_one_graph():
    """The micro-sized model in training mode (dropout on), a batch without padding."""
    import torch._dynamo

    from electra.core.config import ModelConfig
    from electra.pretraining.model import ElectraPretrainer
    from tests.pretraining.test_objective import CLS, PAD, SEP, UNK

    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, embedding_size=16, dropout=0.1)
    model = ElectraPretrainer(cfg, VOCAB, PAD, MASK, [PAD, UNK, CLS, SEP, MASK])
    model.train()
    b = batch(pad_tail=0)
    b.pop("attention_mask")

    def loss(**kwargs):
        return model(**kwargs).loss

    torch._dynamo.reset()
    try:
        explained = torch._dynamo.explain(loss)(**b, row_keys=torch.arange(8) * 104729)
    finally:
        torch._dynamo.reset()
    assert explained.graph_break_count == 0, [r.reason for r in explained.break_reasons]
    assert explained.graph_count == 1
