"""The promotion gate as a plain function of files: limits, paired bootstrap, bias drift."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from electra.core.config import GateConfig
from electra.registry.gate import (
    Evidence,
    bias_drift,
    evaluate_gate,
    limits,
    non_inferiority,
    paired_bootstrap,
)


def _write_glue(path: Path, labels: list[int], preds: list[int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        for i, (label, pred) in enumerate(zip(labels, preds, strict=True)):
            handle.write(json.dumps({"index": i, "line": i + 2, "label": label, "prediction": pred}) + "\n")
    return path


@pytest.fixture
def labels() -> list[int]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 2, size=400).tolist()


def _with_errors(labels: list[int], wrong: int, offset: int = 0) -> list[int]:
    """Predictions equal to the labels except ``wrong`` of them (from ``offset``)."""
    preds = list(labels)
    for i in range(offset, offset + wrong):
        preds[i] = 1 - preds[i]
    return preds


def test_paired_bootstrap_of_identical_models_is_exactly_zero():
    stat = lambda idx: float(np.arange(10)[idx].mean())  # noqa: E731
    assert paired_bootstrap(stat, stat, 10, 200, 0.95, 0) == (0.0, 0.0, 0.0)


def test_paired_interval_is_narrower_than_the_unpaired_one(tmp_path, labels):
    # Two models that differ on 4 of 400 examples: the paired interval sees only those 4,
    # where two independent intervals of ~0.5 accuracy would each be about ±0.05 wide.
    champion = _write_glue(tmp_path / "a.jsonl", labels, _with_errors(labels, 200))
    new = _write_glue(tmp_path / "b.jsonl", labels, _with_errors(labels, 196))
    check = non_inferiority("sst2", new, champion, GateConfig(non_inferiority_margin=0.01, resamples=500))
    assert check.passed, check.detail
    assert check.value == pytest.approx(4 / 400)
    low = float(check.detail.split("[")[1].split(",")[0])
    assert 0.0 <= low <= 0.01                    # 4 changed examples, all for the better


def test_a_worse_model_beyond_the_margin_is_refused_and_says_why(tmp_path, labels):
    champion = _write_glue(tmp_path / "a.jsonl", labels, _with_errors(labels, 40))
    worse = _write_glue(tmp_path / "b.jsonl", labels, _with_errors(labels, 80))     # 10 points worse
    check = non_inferiority("sst2", worse, champion, GateConfig(non_inferiority_margin=0.02))
    assert not check.passed
    assert check.value == pytest.approx(-0.1)
    assert "new - champion = -0.1000" in check.detail and "400 paired examples" in check.detail
    # Within a generous margin the same difference passes.
    assert non_inferiority("sst2", worse, champion, GateConfig(non_inferiority_margin=0.2)).passed


def test_examples_are_paired_by_their_dev_line_not_their_order(tmp_path, labels):
    champion = _write_glue(tmp_path / "a.jsonl", labels, _with_errors(labels, 40))
    rows = [json.loads(line) for line in open(champion)]
    shuffled = tmp_path / "b.jsonl"
    shuffled.write_text("".join(json.dumps(r) + "\n" for r in reversed(rows)))
    check = non_inferiority("sst2", shuffled, champion, GateConfig(non_inferiority_margin=0.0001))
    # Paired by line, the same predictions in another order differ by exactly nothing.
    assert check.value == 0.0 and check.passed and "[+0.0000, +0.0000]" in check.detail


def test_different_dev_sets_are_not_comparable(tmp_path, labels):
    champion = _write_glue(tmp_path / "a.jsonl", labels[:100], labels[:100])
    new = _write_glue(tmp_path / "b.jsonl", labels, labels)
    check = non_inferiority("sst2", new, champion, GateConfig())
    assert not check.passed and "not comparable: 100 of 400" in check.detail
    relabelled = _write_glue(tmp_path / "c.jsonl", [1 - x for x in labels], labels)
    check = non_inferiority("sst2", relabelled, new, GateConfig())
    assert not check.passed and "different gold labels" in check.detail


def test_limits_floor_ceiling_and_missing_metric():
    metrics = {"glue": {"sst2": {"accuracy": 0.8}}, "bias": {"eec": {"gender": {"mean_abs_gap": 0.3}}}}
    cfg = GateConfig(min_metrics={"glue.sst2.accuracy": 0.85, "glue.cola.mcc": 0.1},
                     max_metrics={"bias.eec.gender.mean_abs_gap": 0.2})
    checks = {c.name: c for c in limits(metrics, cfg)}
    assert not checks["floor.glue.sst2.accuracy"].passed and checks["floor.glue.sst2.accuracy"].value == 0.8
    assert not checks["floor.glue.cola.mcc"].passed and "missing" in checks["floor.glue.cola.mcc"].detail
    assert not checks["ceiling.bias.eec.gender.mean_abs_gap"].passed
    assert all(c.passed for c in limits(metrics, GateConfig(min_metrics={"glue.sst2.accuracy": 0.8})))
    # A task model is held only to its own task's limits.
    assert [c.name for c in limits(metrics, cfg, ("glue.sst2.",))] == ["floor.glue.sst2.accuracy"]


def _crows(metric: float, low: float, high: float) -> dict:
    return {"bias": {"crows": {"generator": {"metric": metric, "ci95_low": low, "ci95_high": high}}}}


def test_bias_may_not_drift_from_its_ideal_beyond_its_half_width():
    champion = _crows(52.0, 49.0, 55.0)
    # 2 points further from 50 with a half-width of 3: allowed.
    ok = bias_drift(_crows(54.0, 51.0, 57.0), champion)
    assert len(ok) == 1 and ok[0].passed
    # 6 points further from 50 with a half-width of 3: refused, with the numbers.
    bad = bias_drift(_crows(58.0, 55.0, 61.0), champion)
    assert not bad[0].passed and "+6 further from 50" in bad[0].detail
    # Crossing to the other side at the same distance is no drift.
    assert bias_drift(_crows(48.0, 45.0, 51.0), champion)[0].passed
    # Moving towards the ideal always passes.
    assert bias_drift(_crows(50.5, 47.5, 53.5), champion)[0].passed


def test_a_task_model_is_compared_on_its_own_task_only(tmp_path, labels):
    def evidence(folder: Path, wrong: dict[str, int]) -> Evidence:
        metrics = {"glue": {t: {"main": 0.5, "registered_seed": 1} for t in wrong}}
        for task, n in wrong.items():
            _write_glue(folder / "predictions" / task / "seed-1.jsonl", labels, _with_errors(labels, n))
        (folder / "metrics.json").write_text(json.dumps(metrics))
        return Evidence.from_evaluate_dir(folder)

    champion = evidence(tmp_path / "a", {"sst2": 40, "rte": 40})
    new = evidence(tmp_path / "b", {"sst2": 40, "rte": 120})       # RTE much worse, SST-2 the same
    cfg = GateConfig()
    sst2_only = evaluate_gate(new, champion, cfg, tasks=["sst2"], bias_prefixes=())
    assert [c.name for c in sst2_only] == ["non_inferiority.sst2"] and sst2_only[0].passed
    everything = {c.name: c for c in evaluate_gate(new, champion, cfg)}
    assert everything["non_inferiority.sst2"].passed and not everything["non_inferiority.rte"].passed
    # No champion yet: only the limits apply.
    assert evaluate_gate(new, None, cfg) == []


def _gain_evidence(labels: list[int], pretrained_wrong: int, scratch_wrong: int) -> Evidence:
    """metrics.json's gain over the scratch control, computed as evaluate does (paired, per
    task, then the GLUE mean) from predictions made up to the wanted accuracies."""
    from electra.tasks.base import task_named
    from electra.tasks.scratch import gain_replicates, mean_gain, task_gain, verdict

    rows = {}
    for name, wrong in (("pretrained", pretrained_wrong), ("scratch", scratch_wrong)):
        preds = _with_errors(labels, wrong)
        rows[name] = {"1234": [{"index": i, "line": i + 2, "label": y, "prediction": p}
                               for i, (y, p) in enumerate(zip(labels, preds, strict=True))]}
    impl = task_named("sst2")
    section = task_gain(impl, rows["pretrained"], rows["scratch"])
    point, draws, _ = gain_replicates(impl, rows["pretrained"], rows["scratch"])
    glue = mean_gain({"sst2": (point, draws)})
    beat = int(section["gain_over_scratch_ci"][0] > 0)
    summary = {"glue_mean": glue["mean"], "glue_mean_ci": glue["ci"], "glue_tasks": glue["tasks"],
               "beat": beat, "of": 1, "verdict": verdict(beat, 1, glue["mean"], glue["ci"])}
    return Evidence(metrics={"glue": {"sst2": {"main": 1 - pretrained_wrong / len(labels), **section}},
                             "gain_over_scratch": summary}, predictions={})


def test_the_gate_refuses_a_discriminator_that_does_not_beat_scratch_when_required(labels):
    required = GateConfig(require_gain_over_scratch=True)
    # Pretrained 10 errors in 400, scratch 120: the whole interval is above 0.
    better = _gain_evidence(labels, 10, 120)
    check = next(c for c in evaluate_gate(better, None, required) if c.kind == "gain_over_scratch")
    assert check.passed and check.value == pytest.approx((120 - 10) / 400)
    # Pretrained two examples worse than scratch: the interval reaches below 0; refused, with the numbers.
    tie = _gain_evidence(labels, 100, 98)
    check = next(c for c in evaluate_gate(tie, None, required) if c.kind == "gain_over_scratch")
    low, high = tie.metrics["gain_over_scratch"]["glue_mean_ci"]
    assert not check.passed and check.value == pytest.approx(-2 / 400) and low < 0 <= high
    assert f"[{low:+.4f}, {high:+.4f}]" in check.detail and "not shown to beat scratch" in check.detail
    assert "did not beat scratch" in tie.metrics["gain_over_scratch"]["verdict"]
    # No control in metrics.json: refused, saying so. Not required (tiny, micro): no check at all.
    missing = next(c for c in evaluate_gate(Evidence({"glue": {}}, {}), None, required)
                   if c.kind == "gain_over_scratch")
    assert not missing.passed and "scratch_control" in missing.detail
    assert not any(c.kind == "gain_over_scratch" for c in evaluate_gate(tie, None, GateConfig()))
    # A task model is gated on its own task: the discriminator's requirement is not its.
    assert not any(c.kind == "gain_over_scratch" for c in evaluate_gate(tie, None, required, tasks=["sst2"]))
