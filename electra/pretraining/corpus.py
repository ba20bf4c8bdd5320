"""The corpus guard: refuse a schedule that would read a small corpus over and over.

``small`` and ``base`` follow the paper's schedules (1M and 766k steps); on the bundled
1.9M-token corpus Small's schedule is about 8,700 passes over the same text. That run
would memorise the corpus, not learn an encoder, and cost days to find out. The guard
compares the two numbers before anything is built and stops with what to do instead.
"""

from __future__ import annotations

from electra.core.config import PretrainConfig

# At most this many passes over the corpus: "fewer than 1/50 of the tokens the schedule
# consumes" stops. The paper's own schedules read their corpus a few dozen times at
# most (ELECTRA-Base: 766k x 256 x 512 = 100B tokens over ~3.3B, about 30 passes), and
# 60 minutes of CPU pretraining at ~13k tokens/s reads the bundled 1.9M tokens ~25 times.
MAX_EPOCHS = 50


class CorpusTooSmallError(ValueError):
    """The schedule consumes more than :data:`MAX_EPOCHS` passes over the training corpus."""


def schedule_tokens(cfg: PretrainConfig, max_seq_length: int) -> int:
    """Token slots the schedule reads: max_steps x batch_size x grad_accum_steps x max_seq_length."""
    return cfg.max_steps * cfg.batch_size * cfg.grad_accum_steps * max_seq_length


def corpus_tokens(summary: dict, examples: int, max_seq_length: int) -> int:
    """The training split's real tokens from tokenize's ``summary.json``; without that count
    (an older summary), its slots: examples x max_seq_length (an upper bound)."""
    tokens = summary.get("splits", {}).get("train", {}).get("tokens")
    return int(tokens) if tokens is not None else examples * max_seq_length


def check_corpus_size(cfg: PretrainConfig, corpus: int, max_seq_length: int) -> float:
    """Raise :class:`CorpusTooSmallError` when the schedule reads the corpus more than
    :data:`MAX_EPOCHS` times, unless ``cfg.allow_small_corpus``; return the passes.

    Pitfall: the schedule counts slots (padding included), the corpus real tokens, so
    the passes are slightly overestimated; the bound is far from that margin.
    """
    needed = schedule_tokens(cfg, max_seq_length)
    epochs = needed / max(1, corpus)
    if epochs <= MAX_EPOCHS or cfg.allow_small_corpus:
        return epochs
    raise CorpusTooSmallError(
        f"the corpus is too small for this schedule: {cfg.input_dir} holds {corpus:,} training tokens, and the "
        f"schedule consumes {needed:,} (max_steps {cfg.max_steps} x batch_size {cfg.batch_size} x "
        f"grad_accum_steps {cfg.grad_accum_steps} x max_seq_length {max_seq_length}): {epochs:,.0f} passes over "
        f"the corpus, the corpus is 1/{epochs:,.0f} of the schedule (the limit is 1/{MAX_EPOCHS}). "
        "Point ingest.sources at a real corpus, then rerun ingest and tokenize: text or JSON Lines files, "
        "folders or globs (-S 'ingest.sources=[/data/corpus]'), or a streamed Hugging Face dataset such as "
        "OpenWebText (-S 'ingest.sources=[hf:Skylion007/openwebtext?split=train]'). Or shorten the schedule "
        "(pretrain.max_steps), or set pretrain.allow_small_corpus: true to train on this corpus anyway."
    )
