"""Replaced-token detection: the generator and discriminator (``model``), the fast
dropout, the trainer that runs the ``pretrain`` stage (batches, checkpoints, resume,
distributed data parallel, the non-finite policy) and its FLOP accounting. It may
import ``electra.core`` and ``electra.data``.
"""
