"""Every stage path from one ``output_root``: a stage writes ``<output_root>/<stage>`` and
reads the output of the stage before it, unless its section names its own paths (and
then the stages after it follow those)."""

from __future__ import annotations

from typing import Any

# Where each stage's paths come from when its section leaves them out: its own output
# folder under ``output_root``, and its inputs from the output of the stage before it.
# A section that sets a path keeps it, and the stages after it follow that path.
# (section, field) -> ("root", subfolder) or (section, field, suffix) upstream.
DERIVED_PATHS: dict[tuple[str, str], tuple[str, ...]] = {
    ("ingest", "output_dir"): ("root", "ingest"),
    ("tokenize", "input_dir"): ("ingest", "output_dir", ""),
    ("tokenize", "output_dir"): ("root", "tokenize"),
    ("pretrain", "input_dir"): ("tokenize", "output_dir", ""),
    ("pretrain", "output_dir"): ("root", "pretrain"),
    ("finetune", "model_dir"): ("pretrain", "output_dir", "discriminator"),
    ("finetune", "output_dir"): ("root", "finetune"),
    ("evaluate", "finetune_dir"): ("finetune", "output_dir", ""),
    ("evaluate", "pretrain_dir"): ("pretrain", "output_dir", ""),
    ("evaluate", "output_dir"): ("root", "evaluate"),
    ("register", "pretrain_dir"): ("pretrain", "output_dir", ""),
    ("register", "finetune_dir"): ("finetune", "output_dir", ""),
    ("register", "evaluate_dir"): ("evaluate", "output_dir", ""),
    ("register", "output_dir"): ("root", "register"),
    ("compare", "input_dir"): ("tokenize", "output_dir", ""),
    ("compare", "output_dir"): ("root", "compare"),
}


def derive_paths(raw: dict[str, Any]) -> dict[str, Any]:
    """Fill the stage paths a raw params mapping leaves out (see :data:`DERIVED_PATHS`)."""
    out = dict(raw)
    root = str(out.get("output_root") or "outputs")
    for (section, key), rule in DERIVED_PATHS.items():   # in pipeline order: upstream first
        body = out.get(section)
        body = dict(body) if isinstance(body, dict) else ({} if body is None else body)
        if not isinstance(body, dict) or body.get(key) is not None:
            continue
        if rule[0] == "root":
            body[key] = f"{root}/{rule[1]}"
        else:
            upstream = out[rule[0]][rule[1]]
            body[key] = f"{upstream}/{rule[2]}" if rule[2] else upstream
        out[section] = body
    return out
