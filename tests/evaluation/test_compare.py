"""electra compare: the FLOP count, the equal-compute plan, the verdict, and the stage end to end
on the micro budget (both objectives pretrained, snapshots fine-tuned, report and MLflow runs)."""

from __future__ import annotations

import json

import pytest

from electra.evaluation.compare import _point_key, conclusion, plan_budget
from electra.core.config import CompareConfig, EvaluateConfig, FinetuneConfig, ModelConfig, PretrainConfig
from electra.pretraining.flops import flops_breakdown, training_flops_per_token


def test_flop_breakdown_matches_a_hand_count_for_a_tiny_model():
    cfg = ModelConfig(hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32, embedding_size=8,
                      generator_fraction=0.5)
    seq, vocab, mask = 10, 50, 0.2
    # Generator: width 8 (= embedding size: no projection), feed-forward 16, 2 layers.
    #   attention per layer: 2*4*8*8 = 512 projections + 2*2*10*8 = 320 scores and values -> 2 * 832 = 1664
    #   feed-forward per layer: 2*2*8*16 = 512 -> 1024
    #   MLM head at 20% of tokens: 0.2 * (2*8*8 + 2*8*50) = 0.2 * 928 = 185.6
    # Discriminator: width 16, projection from the 8-wide embeddings 2*8*16 = 256.
    #   attention per layer: 2*4*16*16 = 2048 + 2*2*10*16 = 640 -> 2 * 2688 = 5376
    #   feed-forward per layer: 2*2*16*32 = 2048 -> 4096
    #   head: 2*16*16 + 2*16*1 = 544
    expected = {"generator.embeddings": 0, "generator.attention": 1664, "generator.feed_forward": 1024,
                "generator.mlm_head": 185.6, "discriminator.embeddings": 256, "discriminator.attention": 5376,
                "discriminator.feed_forward": 4096, "discriminator.head": 544}
    assert flops_breakdown(cfg, seq, vocab, mask) == pytest.approx(expected)
    assert training_flops_per_token(cfg, seq, vocab, mask) == pytest.approx(3 * sum(expected.values()))
    # Masked LM: one discriminator-sized encoder with the MLM head (0.2 * (2*16*8 + 2*8*50) = 211.2).
    mlm = {"encoder.embeddings": 256, "encoder.attention": 5376, "encoder.feed_forward": 4096,
           "encoder.mlm_head": 211.2}
    assert flops_breakdown(cfg, seq, vocab, mask, "mlm") == pytest.approx(mlm)


def _pretrain(**kw) -> PretrainConfig:
    model = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, embedding_size=32,
                        max_position_embeddings=128)
    return PretrainConfig(model=model, batch_size=8, max_steps=100, warmup_steps=10, **kw)


def test_one_budget_buys_more_masked_lm_steps_and_the_same_flops():
    plans = plan_budget(CompareConfig(electra_steps=200, fractions=[0.25, 0.5, 1.0]), _pretrain(), 64, 30522)
    electra, mlm = plans["electra"], plans["mlm"]
    budget = 200 * electra.flops_per_step
    assert electra.steps == 200 and mlm.steps > electra.steps
    for plan in plans.values():
        # Each run spends the budget to within one of its steps.
        assert budget - plan.flops_per_step < plan.steps * plan.flops_per_step <= budget
        assert plan.snapshot_steps == [round(f * plan.steps) for f in (0.25, 0.5, 1.0)]
        assert plan.warmup_steps == round(0.1 * plan.steps)       # pretrain's 10/100 warm-up fraction
        assert plan.tokens_per_step == 8 * 64
    assert mlm.steps == int(budget // mlm.flops_per_step)


def test_the_verdict_follows_the_paired_interval():
    assert conclusion([0.70, 0.72, 0.71], [0.60, 0.61, 0.62], 0.95, 1e12)["verdict"] == "ELECTRA is better"
    assert conclusion([0.60, 0.61, 0.62], [0.70, 0.72, 0.71], 0.95, 1e12)["verdict"] == "masked LM is better"
    tie = conclusion([0.70, 0.60, 0.65], [0.66, 0.64, 0.66], 0.95, 1e12)
    assert tie["verdict"] == "no significant difference" and tie["ci"][0] < 0 < tie["ci"][1]
    assert "no significant difference" in tie["line"]
    assert conclusion([0.7], [0.6], 0.95, 1e12)["verdict"].startswith("cannot tell")


def test_point_key_follows_the_snapshot_and_the_protocol_not_the_folders(tmp_path):
    snapshot = tmp_path / "step-0000010"
    snapshot.mkdir()
    (snapshot / "model.safetensors").write_bytes(b"weights")
    ft, ev = FinetuneConfig(), EvaluateConfig()
    key = _point_key(snapshot, ft, ev, ["sst2"])
    assert key == _point_key(snapshot, ft.model_copy(update={"output_dir": "elsewhere"}),
                             ev.model_copy(update={"output_dir": "elsewhere"}), ["sst2"])
    assert key != _point_key(snapshot, ft, ev, ["sst2", "rte"])
    assert key != _point_key(snapshot, ft.model_copy(update={"seeds": ft.seeds + 1}), ev, ["sst2"])
    (snapshot / "model.safetensors").write_bytes(b"other weights")
    assert key != _point_key(snapshot, ft, ev, ["sst2"])


@pytest.mark.slow
def test_compare_on_the_micro_budget_reports_both_objectives_with_nested_mlflow_runs(pretrained_micro, tmp_path):
    from mlflow import MlflowClient

    from electra.pipeline.stages import run_stage
    from tests.conftest import micro_params

    tokenized = pretrained_micro / "outputs" / "tokenize"
    params = micro_params(tmp_path, f"compare.input_dir={tokenized}", f"compare.output_dir={tmp_path}/compare")
    result = run_stage("compare", params, progress=False)
    report = json.loads((tmp_path / "compare" / "report" / "results.json").read_text())
    plans = report["plans"]
    # No generator: a masked-LM step costs less (at this width both are mostly the vocabulary head).
    assert plans["electra"]["steps"] == 8 and plans["mlm"]["steps"] >= 8
    assert plans["mlm"]["flops_per_step"] < plans["electra"]["flops_per_step"]
    rows = {(r["objective"], r["fraction"]): r for r in report["rows"]}
    assert set(rows) == {(o, f) for o in ("electra", "mlm") for f in (0.5, 1.0)}
    for row in rows.values():
        assert set(row["tasks"]) == {"sst2", "rte"} and len(row["glue_by_seed"]) == 2
        assert 0.0 <= row["glue"] <= 1.0 and row["glue_ci"][0] <= row["glue"] <= row["glue_ci"][1]
    # Each snapshot is the discriminator at its step, and the two runs spent the same FLOPs.
    for objective, plan in plans.items():
        for step in plan["snapshot_steps"]:
            assert (tmp_path / "compare" / objective / "pretrain" / "snapshots" / f"step-{step:07d}" /
                    "model.safetensors").is_file()
    # Only scores and predictions of the fine-tuned models are kept, not their weights.
    assert list((tmp_path / "compare").rglob("predictions/sst2/seed-*.jsonl"))
    assert not list((tmp_path / "compare").rglob("finetune/*/seed-*/model"))
    electra_flops = plans["electra"]["steps"] * plans["electra"]["flops_per_step"]
    assert abs(plans["mlm"]["steps"] * plans["mlm"]["flops_per_step"] - electra_flops) < plans["mlm"]["flops_per_step"]
    text = (tmp_path / "compare" / "report" / "report.md").read_text()
    assert result["conclusion"] in text and result["verdict"] in text
    assert (tmp_path / "compare" / "report" / "glue_vs_flops.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # MLflow: the stage's run, and under it one run per objective and one per snapshot.
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    parent = client.get_run(result["mlflow_run_id"])
    assert parent.info.run_name == "compare" and "electra.glue.1" in parent.data.metrics
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert {c.info.run_name for c in children} >= {"electra", "mlm", "electra@0.5", "electra@1", "mlm@0.5", "mlm@1"}
    # A rerun finds every point's scores and pretraining done: the same report.
    again = run_stage("compare", params, progress=False)
    assert again["conclusion"] == result["conclusion"]


def test_the_masked_lm_count_matches_the_mlm_models_matmul_weights():
    """As test_objective's check for ELECTRA: 2 FLOPs per matmul weight per token, the vocabulary
    head at the masked positions only, attention scores and values on top."""
    import torch

    from electra.pretraining.model import ElectraPretrainer

    cfg = ModelConfig(hidden_size=64, num_layers=3, num_heads=4, intermediate_size=256, embedding_size=32)
    model = ElectraPretrainer(cfg, 30522, 0, 103, [0, 100, 101, 102, 103], objective="mlm")
    seq_len, mask_prob = 16, 0.15
    encoder = model.generator
    weights = sum(m.weight.numel() for m in encoder.electra.modules() if isinstance(m, torch.nn.Linear))
    head = encoder.generator_predictions.dense.weight.numel() + encoder.generator_lm_head.weight.numel()
    forward = 2 * weights + mask_prob * 2 * head + 4 * seq_len * encoder.config.hidden_size * cfg.num_layers
    assert encoder.config.hidden_size == 64     # the masked LM is discriminator-sized
    assert training_flops_per_token(cfg, seq_len, 30522, mask_prob, "mlm") == pytest.approx(3 * forward, rel=1e-3)
