"""Fine-tuning and evaluation end to end on a tiny random ELECTRA (CPU, seconds)."""

from __future__ import annotations

import contextlib
import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from electra.core.config import EvaluateConfig, FinetuneConfig
from electra.evaluation.evaluate import evaluate
from electra.tasks.finetune import finetune
from electra.tasks.glue_task import predict
from electra.tasks.recipe import layerwise_lr_groups, length_grouped_batches, linear_schedule, subsample, task_settings
from electra.tasks.glue import Example, read_task

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data"
VOCAB = DATA / "vocab" / "bert-base-uncased-vocab.txt"

pytestmark = pytest.mark.skipif(
    not (DATA / "glue").is_dir() or not VOCAB.is_file(), reason="data/ not present (dvc pull)"
)


def _tiny_config(num_layers: int = 2):
    from transformers import ElectraConfig

    return ElectraConfig(
        vocab_size=30522, embedding_size=16, hidden_size=16, num_hidden_layers=num_layers,
        num_attention_heads=2, intermediate_size=32, max_position_embeddings=128,
    )


class RecordingLogger:
    """Records metrics as (name-prefixed) calls; nested runs are named by ``child``."""

    def __init__(self, prefix: str = "", calls=None, children=None, artifacts=None):
        self.prefix = prefix
        self.calls: list[tuple[dict, int | None]] = [] if calls is None else calls
        self.children: list[tuple[str, dict]] = [] if children is None else children
        self.artifacts: list[tuple[str, str]] = [] if artifacts is None else artifacts

    def log_metrics(self, metrics, step=None):
        self.calls.append(({f"{self.prefix}{k}": v for k, v in metrics.items()}, step))

    def log_artifacts(self, local_dir, artifact_path):
        self.artifacts.append((local_dir, artifact_path))

    @contextlib.contextmanager
    def child(self, name, tags=None):
        self.children.append((name, dict(tags or {})))
        yield RecordingLogger(f"{name}:", self.calls, self.children, self.artifacts)


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory) -> Path:
    from transformers import ElectraForPreTraining

    from electra.data.wordpiece import tokenizer_from_vocab

    path = tmp_path_factory.mktemp("pretrain") / "discriminator"
    torch.manual_seed(0)
    ElectraForPreTraining(_tiny_config()).save_pretrained(path)
    tokenizer_from_vocab(VOCAB).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def finetuned(pretrained_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("finetune")
    cfg = FinetuneConfig(
        model_dir=str(pretrained_dir), data_dir=str(DATA / "glue"), output_dir=str(out),
        tasks=["sst2", "mrpc"], max_train_examples=64, epochs=1, batch_size=16,
        max_seq_length=64, device="cpu", lr=1e-3, seeds=2,
        # the catalog entry's override wins over the global max_train_examples for mrpc
        catalog={"mrpc": {"kind": "glue", "data": str(DATA / "glue" / "MRPC"), "max_train_examples": 48}},
    )
    logger = RecordingLogger()
    result = finetune(cfg, logger=logger, progress=False)
    return cfg, result, logger


def test_finetune_outputs(finetuned):
    cfg, result, logger = finetuned
    out = Path(cfg.output_dir)
    assert result["output_dir"] == str(out)
    assert set(result["tasks"]) == {"sst2", "mrpc"}
    for task, expected_n in (("sst2", 64), ("mrpc", 48)):
        info = result["tasks"][task]
        # The registered model is the first seed's, fixed in advance (never the best on dev).
        assert Path(info["model_dir"]) == out / task / "seed-1234" / "model"
        assert math.isfinite(info["train_loss"]) and info["seconds"] > 0
        summary = json.loads((out / task / "result.json").read_text())
        assert summary["seeds"] == [1234, 1235] and set(summary["runs"]) == {"1234", "1235"}
        for seed in (1234, 1235):
            model_dir = out / task / f"seed-{seed}" / "model"
            assert (model_dir / "config.json").is_file()
            assert (model_dir / "tokenizer.json").is_file()
            saved = json.loads((out / task / f"seed-{seed}" / "result.json").read_text())
            assert saved["task"] == task and saved["seed"] == seed and saved["train_examples"] == expected_n
            assert saved["steps"] == math.ceil(expected_n / 16)
            assert saved["curve"][-1]["step"] == saved["steps"]
        losses = [summary["runs"][s]["train_loss"] for s in ("1234", "1235")]
        assert losses[0] != losses[1]  # the seeds really differ
        assert summary["train_loss"] == pytest.approx(np.median(losses))
    # No temporary build folders are left behind.
    assert not [p for p in out.rglob("*.tmp")]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tasks"] == ["sst2", "mrpc"] and summary["skipped"] == {}
    assert summary["results"]["mrpc"].endswith("mrpc/result.json")
    # One nested run per task and seed, each with its loss and lr.
    assert [name for name, _ in logger.children] == ["sst2/seed-1234", "sst2/seed-1235", "mrpc/seed-1234", "mrpc/seed-1235"]
    keys = {k for metrics, _ in logger.calls for k in metrics}
    assert {"sst2/seed-1234:train_loss", "sst2/seed-1234:lr", "mrpc/seed-1235:train_loss"} <= keys
    assert all(math.isfinite(v) for metrics, _ in logger.calls for v in metrics.values())


def test_saved_model_reloads_and_predicts(finetuned):
    from transformers import ElectraForSequenceClassification

    cfg, result, _ = finetuned
    model_dir = result["tasks"]["mrpc"]["model_dir"]
    model = ElectraForSequenceClassification.from_pretrained(model_dir)
    assert model.config.num_labels == 2
    assert model.config.hidden_dropout_prob == cfg.dropout
    examples = read_task(DATA / "glue", "mrpc", "dev")[:10]
    logits = predict(model_dir, examples, batch_size=4, max_seq_length=64, device="cpu")
    assert logits.shape == (10, 2) and np.isfinite(logits).all()
    # Batching and padding do not change the outputs (order is restored after sorting).
    one_by_one = np.concatenate(
        [predict(model_dir, [ex], batch_size=1, max_seq_length=64, device="cpu") for ex in examples[:3]]
    )
    np.testing.assert_allclose(logits[:3], one_by_one, atol=1e-5)


def test_regression_head_predict_shape(pretrained_dir, tmp_path):
    # STS-B: one output, regression. Fine-tuning for 1 step is enough to check the plumbing.
    cfg = FinetuneConfig(
        model_dir=str(pretrained_dir), data_dir=str(DATA / "glue"), output_dir=str(tmp_path),
        tasks=["stsb"], max_train_examples=8, epochs=1, batch_size=8, max_seq_length=32, device="cpu",
    )
    result = finetune(cfg, progress=False)
    model_dir = result["tasks"]["stsb"]["model_dir"]
    examples = read_task(DATA / "glue", "stsb", "dev")[:5]
    scores = predict(model_dir, examples, batch_size=2, max_seq_length=32, device="cpu")
    assert scores.shape == (5,) and np.isfinite(scores).all()


def test_qnli_without_a_train_split_is_skipped_and_said_so(pretrained_dir, tmp_path):
    cfg = FinetuneConfig(
        model_dir=str(pretrained_dir), data_dir=str(DATA / "glue"), output_dir=str(tmp_path),
        tasks=["qnli", "sst2"], device="cpu", max_train_examples=16, epochs=1, max_seq_length=32,
    )
    result = finetune(cfg, progress=False)
    assert list(result["tasks"]) == ["sst2"]
    assert "no train split" in result["skipped"]["qnli"] and "QNLI/train.tsv" in result["skipped"]["qnli"]
    assert json.loads((tmp_path / "summary.json").read_text())["skipped"] == result["skipped"]
    # The task's folder says why, so a per-task run (finetune@qnli) and evaluate read the same.
    assert [f.name for f in (tmp_path / "qnli").iterdir()] == ["result.json"]
    assert json.loads((tmp_path / "qnli" / "result.json").read_text())["skipped"] == result["skipped"]["qnli"]


def test_layerwise_lr_groups_exact():
    from transformers import ElectraForSequenceClassification

    model = ElectraForSequenceClassification(_tiny_config(num_layers=3))
    groups = layerwise_lr_groups(model, lr=1.0, layer_decay=0.5, weight_decay=0.01)
    lr_of, wd_of = {}, {}
    for group in groups:
        for name in group["param_names"]:
            assert name not in lr_of, f"{name} in two groups"
            lr_of[name] = group["lr"]
            wd_of[name] = group["weight_decay"]
    assert set(lr_of) == {n for n, _ in model.named_parameters()}
    # n = 3, as ELECTRA's code: head 1, layer i -> 0.5**(4 - i), embeddings -> 0.5**5
    assert lr_of["classifier.out_proj.weight"] == 1.0
    assert lr_of["classifier.dense.bias"] == 1.0
    assert lr_of["electra.encoder.layer.2.attention.self.query.weight"] == 0.25
    assert lr_of["electra.encoder.layer.1.output.dense.weight"] == 0.125
    assert lr_of["electra.encoder.layer.0.intermediate.dense.bias"] == 0.0625
    assert lr_of["electra.embeddings.word_embeddings.weight"] == 0.03125
    assert lr_of["electra.embeddings.LayerNorm.weight"] == 0.03125
    # No weight decay on LayerNorm or biases.
    assert wd_of["electra.encoder.layer.0.output.LayerNorm.weight"] == 0.0
    assert wd_of["electra.encoder.layer.0.output.dense.bias"] == 0.0
    assert wd_of["electra.encoder.layer.0.output.dense.weight"] == 0.01
    assert wd_of["classifier.out_proj.weight"] == 0.01


def test_embeddings_project_counts_as_embeddings():
    from transformers import ElectraConfig, ElectraForSequenceClassification

    config = ElectraConfig(vocab_size=100, embedding_size=8, hidden_size=16, num_hidden_layers=1,
                           num_attention_heads=2, intermediate_size=16)
    model = ElectraForSequenceClassification(config)
    groups = layerwise_lr_groups(model, lr=1.0, layer_decay=0.5, weight_decay=0.0)
    lr_of = {n: g["lr"] for g in groups for n in g["param_names"]}
    assert lr_of["electra.embeddings_project.weight"] == 0.125  # n = 1: 0.5**(1 + 2)


def test_linear_schedule_keeps_layer_ratios():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 0.5}])
    sched = linear_schedule(opt, warmup_steps=2, total_steps=6)
    seen = []
    for _ in range(6):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert [s[0] for s in seen] == pytest.approx([0.5, 1.0, 1.0, 0.75, 0.5, 0.25])
    assert all(s[1] == pytest.approx(s[0] / 2) for s in seen)


def test_length_grouped_batches():
    lengths = list(np.random.default_rng(0).integers(5, 100, size=103))
    batches = length_grouped_batches(lengths, 8, np.random.default_rng(1), bucket_batches=4)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(103))
    assert all(len(b) <= 8 for b in batches)
    # Seeded: the same rng seed gives the same batches, another seed other batches.
    again = length_grouped_batches(lengths, 8, np.random.default_rng(1), bucket_batches=4)
    assert again == batches
    assert length_grouped_batches(lengths, 8, np.random.default_rng(2), bucket_batches=4) != batches
    # Within a bucket batches are length-sorted: spread inside a batch is small on average.
    spread = np.mean([max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches])
    assert spread < 30


def test_subsample_and_overrides():
    examples = [Example(f"s{i}", None, i % 2, i + 2) for i in range(100)]
    picked = subsample(examples, 10, seed=3)
    assert len(picked) == 10 and picked == subsample(examples, 10, seed=3)
    assert [e.line for e in picked] == sorted(e.line for e in picked)  # file order kept
    assert subsample(examples, 200, seed=3) == examples
    cfg = FinetuneConfig(epochs=3, lr=1e-4, max_train_examples=500, tasks=["rte", "sst2"],
                         catalog={"rte": {"epochs": 10, "lr": 5e-5, "max_seq_length": 256}})
    assert task_settings(cfg, "rte") == {"epochs": 10, "lr": 5e-5, "max_train_examples": 500,
                                         "max_seq_length": 256, "batch_size": 32}
    assert task_settings(cfg, "sst2") == {"epochs": 3, "lr": 1e-4, "max_train_examples": 500,
                                          "max_seq_length": 128, "batch_size": 32}


def test_evaluate_writes_metrics_report_and_plots(finetuned, tmp_path, monkeypatch):
    cfg, _, _ = finetuned
    ecfg = EvaluateConfig(
        finetune_dir=cfg.output_dir, pretrain_dir=str(tmp_path / "pretrain"), data_dir=str(DATA),
        output_dir=str(tmp_path / "eval"), batch_size=16, max_eval_examples=40, device="cpu",
        scratch_control=False,   # tests/evaluation/test_scratch_control.py runs the control
    )
    logger = RecordingLogger()
    result = evaluate(ecfg, cfg, logger=logger, progress=False, bias=False)
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved == result
    assert "bias" not in saved
    glue = saved["glue"]
    sst2, mrpc = glue["sst2"], glue["mrpc"]
    assert set(sst2["seeds"]) == {"1234", "1235"} and sst2["registered_seed"] == 1234
    # Headline = median over seeds (of two: their mean), never the best seed.
    per_seed = [sst2["seeds"][s]["accuracy"] for s in ("1234", "1235")]
    assert sst2["accuracy"] == pytest.approx(np.median(per_seed))
    assert sst2["spread"]["accuracy"]["min"] == min(per_seed) and sst2["spread"]["accuracy"]["n"] == 2
    assert {"accuracy", "f1", "main"} <= set(mrpc) and mrpc["main"] == mrpc["accuracy"]
    low, high = sst2["main_ci"]
    assert low <= sst2["seeds"]["1234"]["main"] <= high and sst2["main_ci"] == sst2["seeds"]["1234"]["main_ci"]
    assert glue["score_tasks"] == ["sst2", "mrpc"]
    assert glue["score"] == pytest.approx((sst2["main"] + mrpc["main"]) / 2)
    rows = [json.loads(line) for line in (tmp_path / "eval" / "predictions" / "sst2" / "seed-1235.jsonl").open()]
    assert len(rows) == 40 and rows[0]["index"] == 0 and rows[0]["line"] == 2
    assert sum(rows[0]["probabilities"]) == pytest.approx(1.0)
    assert sst2["seeds"]["1235"]["accuracy"] == pytest.approx(np.mean([r["prediction"] == r["label"] for r in rows]))
    confusion = np.asarray(sst2["seeds"]["1235"]["confusion"])
    assert confusion.sum() == 40 and np.trace(confusion) / 40 == pytest.approx(sst2["seeds"]["1235"]["accuracy"])
    # Report and plots, logged as artifacts; medians logged on the stage run, seeds nested.
    report = (tmp_path / "eval" / "report" / "report.md").read_text()
    assert "ELECTRA-Small-OWT" in report and "| this run |" in report
    assert {p.name for p in (tmp_path / "eval" / "plots").glob("*.png")} >= {
        "tasks.png", "confusion_sst2.png", "confusion_mrpc.png", "finetune_loss.png"}
    assert {path for _, path in logger.artifacts} == {"plots", "report"}
    assert [name for name, _ in logger.children] == ["sst2/seed-1234", "sst2/seed-1235", "mrpc/seed-1234", "mrpc/seed-1235"]
    logged = logger.calls[-1][0]
    assert logged["glue.sst2.accuracy"] == sst2["accuracy"]
    assert "glue.score" in logged and not any("seeds" in k or "spread" in k or "score_tasks" in k for k in logged)
    assert logger.calls[0][0]["sst2/seed-1234:accuracy"] == sst2["seeds"]["1234"]["accuracy"]

    # With bias on, the bias functions get the documented paths and scorers; stubbed here
    # (tests/model/test_bias*.py test the real ones).
    calls = []
    fake = types.ModuleType("electra.evaluation.bias")
    fake.crows_pairs = lambda model_dir, csv_path, **kw: calls.append(("crows", model_dir, csv_path, kw)) or {
        "metric": 50.0 if kw["scorer"] == "generator" else 55.0, "ci95_low": 40.0, "ci95_high": 60.0, "n_pairs": 40}
    fake.stereoset = lambda model_dir, path, **kw: calls.append(("stereoset", model_dir, path, kw)) or {
        "lms": 60.0, "ss": 52.0, "icat": 57.6, "n": 40, "interpretation": "ok"}
    fake.eec = lambda model_dir, csv_path, **kw: calls.append(("eec", model_dir, csv_path, kw)) or {
        "gender": {"mean_gap": 0.1, "mean_abs_gap": 0.1, "groups": ["female", "male"], "p_value": 0.5, "n_groups": 3}}
    monkeypatch.setitem(sys.modules, "electra.evaluation.bias", fake)
    result = evaluate(ecfg, cfg.model_copy(update={"tasks": ["sst2"]}), logger=logger, progress=False)
    bias = result["bias"]
    assert bias["crows"]["generator"]["metric"] == 50.0 and bias["crows"]["discriminator"]["metric"] == 55.0
    assert set(bias["stereoset"]) == {"generator", "discriminator"}
    by_kind = {(c[0], c[3].get("scorer")): c for c in calls}
    assert by_kind[("crows", "generator")][1] == f"{ecfg.pretrain_dir}/generator"
    assert by_kind[("crows", "discriminator")][1] == f"{ecfg.pretrain_dir}/discriminator"
    assert by_kind[("crows", "generator")][2].endswith("bias/crows_pairs/crows_pairs_anonymized.csv")
    assert by_kind[("stereoset", "discriminator")][2].endswith("bias/stereoset/stereoset_dev_flat.jsonl")
    eec_call = by_kind[("eec", None)]
    assert eec_call[1] == f"{cfg.output_dir}/sst2/seed-1234/model"
    assert eec_call[2].endswith("bias/eec/Equity-Evaluation-Corpus.csv")
    assert eec_call[3]["device"] == "cpu" and by_kind[("crows", "generator")][3]["max_pairs"] is None
    assert logger.calls[-1][0]["bias.eec.gender.mean_abs_gap"] == 0.1
    assert logger.calls[-1][0]["bias.crows.discriminator.metric"] == 55.0
    report = (tmp_path / "eval" / "report" / "report.md").read_text()
    assert "### CrowS-Pairs" in report and "### StereoSet" in report and "### Equity Evaluation Corpus" in report


def test_one_task_at_a_time_gives_the_same_models_as_all_at_once(pretrained_dir, tmp_path):
    """The fan-out (Prefect .map, DVC foreach) must not change what is trained."""
    from electra.core.files import sha256_tree
    from electra.tasks.finetune import finetune_results, finetune_task

    common = dict(model_dir=str(pretrained_dir), data_dir=str(DATA / "glue"), tasks=["rte", "sst2"],
                  device="cpu", max_train_examples=16, epochs=1, max_seq_length=32)
    together = FinetuneConfig(output_dir=str(tmp_path / "together"), **common)
    apart = FinetuneConfig(output_dir=str(tmp_path / "apart"), **common)
    finetune(together, progress=False)
    for task in reversed(apart.tasks):   # another order, one call per task
        finetune_task(apart, task, progress=False)
    for task in common["tasks"]:
        a = sha256_tree(tmp_path / "together" / task / "seed-1234" / "model")
        b = sha256_tree(tmp_path / "apart" / task / "seed-1234" / "model")
        assert a == b, task
    trained, skipped = finetune_results(apart.output_dir, apart.tasks)
    assert set(trained) == {"rte", "sst2"} and not skipped
    with pytest.raises(ValueError, match="not in finetune.tasks"):
        finetune_task(apart, "cola", progress=False)
    with pytest.raises(FileNotFoundError, match="cola"):
        finetune_results(apart.output_dir, ["cola"])


def test_a_task_evaluated_alone_is_reused_until_its_model_changes(pretrained_dir, tmp_path):
    """evaluate@<task> records its metrics with a key; the summary reuses them only while the
    key (models, params, code) still matches."""
    from electra.core.config import EvaluateConfig
    from electra.evaluation.evaluate import evaluate_one, task_result_path
    from electra.tasks.finetune import finetune_task

    ft = FinetuneConfig(model_dir=str(pretrained_dir), data_dir=str(DATA / "glue"), tasks=["sst2"],
                        output_dir=str(tmp_path / "ft"), device="cpu", max_train_examples=16, epochs=1,
                        max_seq_length=32)
    ev = EvaluateConfig(finetune_dir=ft.output_dir, pretrain_dir=str(pretrained_dir.parent), data_dir=str(DATA),
                        output_dir=str(tmp_path / "ev"), max_eval_examples=24, device="cpu",
                        scratch_control=False)    # the pretrained side's cache; the control's has its own test
    finetune_task(ft, "sst2", progress=False)
    first = evaluate_one("sst2", ev, ft)
    recorded = json.loads(task_result_path(ev, "sst2").read_text())
    assert recorded["result"] == first and (tmp_path / "ev" / "predictions" / "sst2" / "seed-1234.jsonl").is_file()

    calls = []
    import electra.evaluation.evaluate as evaluate_module
    original = evaluate_module.evaluate_task

    def counting(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    evaluate_module.evaluate_task = counting
    try:
        assert evaluate_one("sst2", ev, ft) == first and calls == []          # same key: reused
        finetune_task(ft.model_copy(update={"lr": 1e-3}), "sst2", progress=False)   # retrained
        evaluate_one("sst2", ev, ft)
        assert calls == ["sst2"]                                              # new models: recomputed
        evaluate_one("sst2", ev.model_copy(update={"max_eval_examples": 16}), ft)
        assert calls == ["sst2", "sst2"]                                      # other params: recomputed
    finally:
        evaluate_module.evaluate_task = original
