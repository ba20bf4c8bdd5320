"""From raw text to packed pretraining examples: reading sources (files, archives, JSON
Lines, ``hf:`` datasets), decoding and normalising text, splitting sentences,
deduplicating, the ``ingest`` stage, the WordPiece vocabulary, packing, and the
``tokenize`` stage. It may import ``electra.core`` only.
"""
