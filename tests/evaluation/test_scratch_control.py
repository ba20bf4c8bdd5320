"""The from-scratch control on real micro models: it runs, differs from the pretrained model,
is reused while its key holds (new pretrained weights included), and its gain with intervals
reaches metrics.json, the report, the summary and the model card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from electra.core.files import sha256_tree
from tests.conftest import micro_params

pytestmark = pytest.mark.data


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _new_weights(model_dir: Path) -> None:
    """Pretraining rerun, as far as the control can tell: same config and tokenizer, other weights."""
    from transformers import ElectraForPreTraining

    model = ElectraForPreTraining.from_pretrained(model_dir)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    model.save_pretrained(model_dir)


def test_scratch_control_runs_is_reused_across_pretraining_and_is_reported(pretrained_micro, tmp_path):
    from electra.evaluation.evaluate import evaluate, scratch_key
    from electra.pipeline.summary import summary_text
    from electra.tasks.finetune import finetune

    # 1. A copy of the session's micro discriminator, so its weights can be changed here.
    disc = tmp_path / "discriminator"
    shutil.copytree(pretrained_micro / "outputs" / "pretrain" / "discriminator", disc)
    params = micro_params(tmp_path, "finetune.tasks=[sst2, rte]", f"finetune.model_dir={disc}")
    ev, ft = params.evaluate, params.finetune
    assert ev.scratch_control
    finetune(ft, progress=False)
    metrics = evaluate(ev, ft, progress=False, bias=False)

    # 2. It ran: models and predictions under scratch/<task>/, the random init cleared away.
    root = Path(ev.output_dir) / "scratch"
    for task in ("sst2", "rte"):
        assert (root / task / "seed-1234" / "model").is_dir()
        assert (root / task / "predictions" / "seed-1234.jsonl").is_file()
        assert not (root / task / "init").exists()
    # ... on the same dev examples as the pretrained model, with other predictions.
    pre = _rows(Path(ev.output_dir) / "predictions" / "sst2" / "seed-1234.jsonl")
    scr = _rows(root / "sst2" / "predictions" / "seed-1234.jsonl")
    assert [r["line"] for r in pre] == [r["line"] for r in scr] and len(pre) == 128
    assert not np.allclose([r["probabilities"] for r in pre], [r["probabilities"] for r in scr])
    sst2 = metrics["glue"]["sst2"]
    assert sst2["scratch"]["dev_examples"] == sst2["dev_examples"] == 128

    # 3. The gain: pretrained - scratch on the main metric, inside its paired interval.
    gain = sst2["seeds"]["1234"]["main"] - sst2["scratch"]["seeds"]["1234"]["main"]
    assert sst2["gain_over_scratch"] == pytest.approx(gain)
    low, high = sst2["gain_over_scratch_ci"]
    assert low <= sst2["gain_over_scratch"] <= high
    assert "gain_over_scratch_seed_ci" not in sst2          # one seed: no interval over seeds
    summary = metrics["gain_over_scratch"]
    rte = metrics["glue"]["rte"]
    assert summary["glue_tasks"] == ["rte", "sst2"] and summary["of"] == 2
    assert summary["glue_mean"] == pytest.approx((sst2["gain_over_scratch"] + rte["gain_over_scratch"]) / 2)
    assert summary["glue_mean_low"] <= summary["glue_mean"] <= summary["glue_mean_high"]
    assert summary["verdict"].startswith("pretraining ")

    # 4. metrics.json (what `dvc metrics` reads), the report, the summary.
    saved = json.loads((Path(ev.output_dir) / "metrics.json").read_text())
    assert saved["gain_over_scratch"] == summary and saved["glue"]["sst2"]["scratch"]["main"] == sst2["scratch"]["main"]
    report = (Path(ev.output_dir) / "report" / "report.md").read_text()
    assert "## Pretrained vs from scratch" in report and "| GLUE mean (rte, sst2) |" in report
    assert f"{100 * sst2['gain_over_scratch']:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]" in report
    assert "the GLUE mean gain is" in report
    text = summary_text(params, ui_hint=False)
    assert "Pretrained vs from scratch" in text and summary["verdict"] in text

    # 5. New pretrained weights: the pretrained side changes, the control is reused as it was.
    record = root / "sst2" / "evaluation.json"
    before = (record.stat().st_mtime_ns, sha256_tree(root / "sst2" / "seed-1234" / "model"), scratch_key("sst2", ev, ft))
    _new_weights(disc)
    finetune(ft, progress=False)
    again = evaluate(ev, ft, progress=False, bias=False)
    assert (record.stat().st_mtime_ns, sha256_tree(root / "sst2" / "seed-1234" / "model"),
            scratch_key("sst2", ev, ft)) == before
    assert again["glue"]["sst2"]["scratch"] == sst2["scratch"]
    assert _rows(Path(ev.output_dir) / "predictions" / "sst2" / "seed-1234.jsonl") != pre

    # 6. The recipe or the task changes the key (the control is then run again).
    assert scratch_key("sst2", ev, ft.model_copy(update={"lr": ft.lr * 2})) != before[2]
    assert scratch_key("rte", ev, ft) != before[2]


def test_no_scratch_control_when_it_is_off(pretrained_micro, tmp_path):
    from electra.evaluation.evaluate import evaluate
    from electra.tasks.finetune import finetune

    params = micro_params(tmp_path, "finetune.tasks=[rte]", "evaluate.scratch_control=false",
                          f"finetune.model_dir={pretrained_micro}/outputs/pretrain/discriminator")
    finetune(params.finetune, progress=False)
    metrics = evaluate(params.evaluate, params.finetune, progress=False, bias=False)
    assert "gain_over_scratch" not in metrics and "scratch" not in metrics["glue"]["rte"]
    assert not (Path(params.evaluate.output_dir) / "scratch").exists()
    report = (Path(params.evaluate.output_dir) / "report" / "report.md").read_text()
    assert "No scratch control was run" in report


def test_a_dev_set_with_a_repeated_example_pairs_both_copies():
    """WNUT-17's dev set repeats sentences: the gain pairs each copy with its own twin."""
    from electra.tasks.base import task_named
    from electra.tasks.scratch import _aligned

    ner = task_named("ner")
    rows = [{"tokens": ["hi", "there"], "gold": ["O", "O"], "pred": ["O", "O"]},
            {"tokens": ["paris"], "gold": ["B-location"], "pred": ["O"]},
            {"tokens": ["hi", "there"], "gold": ["O", "O"], "pred": ["O", "B-person"]}]
    scratch = [rows[1], rows[0], rows[2]]
    assert _aligned(ner, rows, scratch) == rows
    with pytest.raises(ValueError, match="other dev examples"):
        _aligned(ner, rows, rows[:2])
