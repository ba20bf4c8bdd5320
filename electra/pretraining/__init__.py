"""Replaced-token detection: the generator and discriminator (``model``), the fast
dropout, and the ``pretrain`` stage: its loop (``trainer``), the data stream
(``batches``), checkpoints and resume (``checkpoint``), data parallelism
(``distributed``) and FLOP accounting (``flops``). It may import ``electra.core``
and ``electra.data``.
"""
