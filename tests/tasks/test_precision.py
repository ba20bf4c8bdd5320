"""bf16 autocast in fine-tuning, evaluation and bias scoring: the losses stay fp32 and
follow the fp32 ones within a tolerance, and the fp32 loss taken outside the model is the
one the Hugging Face heads compute.

Models have the micro profile's shapes (hidden 128, 2 layers, embeddings 128), freshly
initialised: no pretraining is needed to compare two precisions of the same weights. The
initialisation is 5x the default's spread, so logits are of order 1 (at the default they
are ~0.02 and any absolute tolerance would pass). Measured on this CPU: GLUE logits 1.4%
of their largest apart, the loss 1e-4 relative.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from electra.core.runtime import autocast
from electra.tasks.recipe import forward_loss, inference

ROOT = Path(__file__).resolve().parents[2]
VOCAB = ROOT / "data" / "vocab" / "bert-base-uncased-vocab.txt"
CPU = torch.device("cpu")
BF16 = torch.bfloat16


def _config(**extra):
    from transformers import ElectraConfig

    return ElectraConfig(vocab_size=30522, embedding_size=128, hidden_size=128, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=512, max_position_embeddings=512, **extra)


def _model(cls, **extra):
    torch.manual_seed(0)
    return cls(_config(initializer_range=0.1, **extra)).eval()


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import BertTokenizerFast

    if not VOCAB.exists():
        pytest.skip("data/ is missing: run `make data` (dvc pull) first")
    return BertTokenizerFast(vocab_file=str(VOCAB), do_lower_case=True)


@pytest.fixture(scope="module")
def glue_batch(tokenizer):
    """Eight SST-2 dev sentences, padded as fine-tuning pads them, with their labels."""
    from electra.tasks.glue import read_task
    from electra.tasks.glue_task import collate, encode

    examples = read_task(ROOT / "data" / "glue", "sst2", "dev")[:8]
    batch = collate(encode(tokenizer, examples, 128), tokenizer.pad_token_id)
    return {**batch, "labels": torch.tensor([ex.label for ex in examples], dtype=torch.long)}


def _hf_loss(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).loss


def _our_loss(model, batch, precision) -> torch.Tensor:
    with torch.no_grad():
        return forward_loss(model, batch, precision)


# ----------------------------------------------------------------- the fp32 loss is the heads' loss


def test_the_fp32_loss_is_the_sequence_classification_heads(glue_batch):
    from transformers import ElectraForSequenceClassification

    model = _model(ElectraForSequenceClassification, num_labels=2)
    expected = _hf_loss(model, glue_batch)
    model.config.problem_type = None
    assert torch.allclose(_our_loss(model, glue_batch, "fp32"), expected, atol=1e-6)
    assert model.config.problem_type == "single_label_classification"  # stored as HF stores it


def test_the_fp32_loss_is_the_regression_heads(glue_batch):
    from transformers import ElectraForSequenceClassification

    model = _model(ElectraForSequenceClassification, num_labels=1)
    batch = {**glue_batch, "labels": torch.linspace(0, 5, 8)}
    assert torch.allclose(_our_loss(model, batch, "fp32"), _hf_loss(model, batch), atol=1e-6)
    assert model.config.problem_type == "regression"


def test_the_fp32_loss_is_the_token_and_span_heads(glue_batch):
    from transformers import ElectraForQuestionAnswering, ElectraForTokenClassification

    inputs = {k: v for k, v in glue_batch.items() if k != "labels"}
    width = inputs["input_ids"].shape[1]
    tags = torch.randint(0, 5, (8, width), generator=torch.Generator().manual_seed(1))
    tags[:, ::3] = -100  # pieces after a word's first are not scored
    tokens = {**inputs, "labels": tags}
    model = _model(ElectraForTokenClassification, num_labels=5)
    assert torch.allclose(_our_loss(model, tokens, "fp32"), _hf_loss(model, tokens), atol=1e-6)

    # One start beyond the window: ignored, as the QA head ignores it.
    spans = {**inputs, "start_positions": torch.tensor([1, 2, 3, 0, 5, 6, 7, width + 4]),
             "end_positions": torch.tensor([2, 3, 4, 0, 6, 7, 8, 9])}
    model = _model(ElectraForQuestionAnswering)
    assert torch.allclose(_our_loss(model, spans, "fp32"), _hf_loss(model, spans), atol=1e-6)


# ----------------------------------------------------------------- bf16 against fp32


def test_bf16_glue_logits_and_loss_follow_fp32_and_the_loss_stays_fp32(glue_batch):
    from transformers import ElectraForSequenceClassification

    model = _model(ElectraForSequenceClassification, num_labels=2)
    inputs = {k: v for k, v in glue_batch.items() if k != "labels"}
    with inference(CPU, "fp32"):
        fp32_logits = model(**inputs).logits
    with inference(CPU, "bf16"):
        bf16_logits = model(**inputs).logits
    assert bf16_logits.dtype is BF16 and fp32_logits.dtype is torch.float32
    assert fp32_logits.abs().max() > 0.5  # a scale at which the tolerance means something
    assert (bf16_logits.float() - fp32_logits).abs().max() <= 0.05 * fp32_logits.abs().max()

    fp32 = _our_loss(model, glue_batch, "fp32")
    bf16 = _our_loss(model, glue_batch, "bf16")
    assert bf16.dtype is torch.float32
    assert abs(bf16.item() - fp32.item()) <= 0.01 * abs(fp32.item())


def test_a_bf16_training_step_has_fp32_gradients_close_to_fp32s(glue_batch):
    from transformers import ElectraForSequenceClassification

    grads = {}
    for precision in ("fp32", "bf16"):
        model = _model(ElectraForSequenceClassification, num_labels=2)
        forward_loss(model, glue_batch, precision).backward()
        grads[precision] = model.classifier.out_proj.weight.grad
    assert grads["bf16"].dtype is torch.float32  # the weights (and so their gradients) stay fp32
    cos = torch.nn.functional.cosine_similarity(grads["bf16"].flatten(), grads["fp32"].flatten(), dim=0)
    assert cos > 0.99


def test_bf16_predictions_follow_fp32(tokenizer):
    from transformers import ElectraForSequenceClassification

    from electra.tasks.glue import read_task
    from electra.tasks.glue_task import predict_loaded

    model = _model(ElectraForSequenceClassification, num_labels=2)
    examples = read_task(ROOT / "data" / "glue", "sst2", "dev")[:16]
    fp32 = predict_loaded(model, tokenizer, examples, 8, 128, CPU, "fp32")
    bf16 = predict_loaded(model, tokenizer, examples, 8, 128, CPU, "bf16")
    assert fp32.dtype == bf16.dtype
    assert abs(bf16 - fp32).max() <= 0.05 * abs(fp32).max()


# ----------------------------------------------------------------- bias scores


def _sentences(tokenizer) -> tuple[list[list[int]], list[list[int]]]:
    texts = ["the nurse said she would be late.", "the engineer fixed the bridge before winter came."]
    sequences = [tokenizer(t)["input_ids"] for t in texts]
    return sequences, [list(range(1, len(s) - 1)) for s in sequences]


@pytest.mark.parametrize("head, scorer, sentence_tolerance", [
    ("ElectraForPreTraining", "DiscriminatorScorer", 0.02),   # the sentence score: 0.6% measured
    ("ElectraForMaskedLM", "GeneratorScorer", 0.01),
])
def test_bf16_bias_scores_follow_fp32(tokenizer, head, scorer, sentence_tolerance):
    import transformers

    from electra.evaluation.bias import common

    model = _model(getattr(transformers, head))
    sequences, positions = _sentences(tokenizer)
    scores = {p: getattr(common, scorer)(model, tokenizer, device=CPU, precision=p).token_log_probs(sequences, positions)
              for p in ("fp32", "bf16")}
    for fp32, bf16 in zip(scores["fp32"], scores["bf16"], strict=True):
        assert abs(bf16 - fp32).max() <= 0.05 * abs(fp32).max()
        assert abs(bf16.sum() - fp32.sum()) <= sentence_tolerance * abs(fp32.sum())


def test_autocast_fp32_leaves_the_forward_in_fp32():
    x = torch.randn(3, 3)
    with autocast(CPU, None):
        assert (x @ x).dtype is torch.float32
