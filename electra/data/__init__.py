"""From raw text to packed pretraining examples. The ``ingest`` stage (``ingest.py``) reads
sources (``sources.py``: files, folders, globs, archives, JSON Lines, ``hf:`` datasets),
decodes them (``decoding.py``: byte-order marks, UTF-8, detected legacy encodings),
normalises and cuts the text (``text.py``: documents, sentences, long lines), drops
duplicates (``dedup.py``: exact and MinHash/LSH) and writes shards (``shards.py``). The
``tokenize`` stage (``tokenize.py``) reads the shards, tokenises them with the WordPiece
vocabulary (``wordpiece.py``) and packs examples (``packing.py``). It may import
``electra.core`` only.
"""
