"""One content key for every cache: a stage's skip fingerprint, a task's recorded
evaluation, ingest's per-file cache, tokenize's per-shard cache, a comparison point,
a pretraining checkpoint's resume key.

A key is a SHA-256 over three kinds of things, each named, so two keys made of
different things never collide by accident:

- values: anything JSON can hold (params sections, settings, versions), serialised
  with sorted keys so dict order never matters;
- files and folders: their content hashes (``missing`` when absent), never their times;
- code: the ``electra`` source files the result depends on, by their path inside the
  package and their content, so moving or editing a module changes every key it is in.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from electra.core.files import sha256_file, sha256_tree

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def path_hash(path: str | Path | None) -> str:
    """The content hash of a file or folder, or ``missing``."""
    if path is None:
        return "missing"
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    if p.is_dir():
        return sha256_tree(p)
    return "missing"


def code_files(*modules: str) -> list[Path]:
    """The source files of ``electra`` modules or packages named relative to the package
    (``"data/ingest.py"``, ``"tasks"``): a package counts by all of its modules."""
    found: list[Path] = []
    for name in modules:
        path = PACKAGE_ROOT / name
        found += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return sorted(set(found))


def content_key(values: Any = None, paths: Mapping[str, str | Path | None] | None = None,
                code: Iterable[str | Path] = ()) -> str:
    """SHA-256 of ``values`` (JSON), the contents of ``paths`` (name -> file or folder) and
    the ``code`` files (paths, or names relative to the ``electra`` package)."""
    digest = hashlib.sha256()
    digest.update(b"values\0" + json.dumps(values, sort_keys=True, default=str).encode() + b"\0")
    for name, path in sorted((paths or {}).items()):
        digest.update(f"path:{name}:{path_hash(path)}\0".encode())
    for item in code:
        for file in (code_files(item) if isinstance(item, str) else [Path(item)]):
            rel = file.resolve().relative_to(PACKAGE_ROOT).as_posix()
            digest.update(f"code:{rel}:{sha256_file(file)}\0".encode())
    return digest.hexdigest()
