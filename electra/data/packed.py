"""Reading the packed pretraining examples :func:`electra.data.tokenize.tokenize` writes:
each split is memory-mapped ``.npy`` shards listed in order by its ``index.json``.

Apart from the stage that writes them, so that what pretraining runs (and is
fingerprinted by) is this reader, not the tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from electra.core.files import read_json


class PackedDataset:
    """Read-only view over a split written by :func:`tokenize`, backed by memory maps.

    The split's ``index.json`` gives its shards in order (one unit's after another's)."""

    def __init__(self, folder: str | Path, split: str = "train") -> None:
        root = Path(folder) / split
        index = root / "index.json"
        if not index.is_file():
            raise FileNotFoundError(f"{index}: not found; run `electra tokenize` first")
        names = [entry["name"] for entry in read_json(index)["shards"]]
        if not names:
            raise FileNotFoundError(f"{index}: lists no shards; run `electra tokenize` first")
        self.input_ids = [np.load(root / f"input_ids-{n}.npy", mmap_mode="r") for n in names]
        self.token_type_ids = [np.load(root / f"token_type_ids-{n}.npy", mmap_mode="r") for n in names]
        self.offsets = np.cumsum([0] + [a.shape[0] for a in self.input_ids])
        self.max_seq_length = int(self.input_ids[0].shape[1])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``indices`` as int64 ``(ids, token_types)`` arrays of shape (len(indices), L)."""
        ids = np.empty((len(indices), self.max_seq_length), dtype=np.int64)
        types = np.empty((len(indices), self.max_seq_length), dtype=np.int64)
        shard_of = np.searchsorted(self.offsets, indices, side="right") - 1
        for row, (index, shard) in enumerate(zip(indices, shard_of)):
            local = index - self.offsets[shard]
            ids[row] = self.input_ids[shard][local]
            types[row] = self.token_type_ids[shard][local]
        return ids, types
