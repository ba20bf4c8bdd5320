"""The corpus guard: a schedule that would read the corpus more than MAX_EPOCHS times stops
before pretraining, naming both numbers and how to point ingest.sources at a real corpus."""

from __future__ import annotations

import pytest

from electra.core.config import load_params
from electra.pretraining.corpus import MAX_EPOCHS, CorpusTooSmallError, check_corpus_size, corpus_tokens
from tests.conftest import ROOT

# The bundled corpus (data/pretrain) after tokenize at 128 tokens (full-fill packing): summary.json's train tokens.
BUNDLED_TRAIN_TOKENS = 1_884_220


@pytest.mark.parametrize("profile", ["small", "base"])
def test_the_paper_profiles_stop_on_the_bundled_corpus(profile):
    cfg = load_params(ROOT / "params.yaml", profile=profile).pretrain
    with pytest.raises(CorpusTooSmallError) as stopped:
        check_corpus_size(cfg, BUNDLED_TRAIN_TOKENS, 128)
    message = str(stopped.value)
    needed = cfg.max_steps * cfg.batch_size * cfg.grad_accum_steps * 128
    assert f"{BUNDLED_TRAIN_TOKENS:,}" in message and f"{needed:,}" in message
    assert "ingest.sources" in message and "hf:" in message and "allow_small_corpus" in message


@pytest.mark.parametrize("profile", ["tiny", "micro"])
def test_the_cpu_profiles_pass(profile):
    params = load_params(ROOT / "params.yaml", profile=profile)
    # micro packs 64-token examples of one small source: 87,218 train tokens at full fill, measured.
    tokens, length = (87_218, 64) if profile == "micro" else (BUNDLED_TRAIN_TOKENS, 128)
    assert check_corpus_size(params.pretrain, tokens, length) <= MAX_EPOCHS


def test_allow_small_corpus_overrides_and_the_bound_is_the_stated_one():
    cfg = load_params(ROOT / "params.yaml", profile="small",
                      overrides=["pretrain.allow_small_corpus=true"]).pretrain
    assert check_corpus_size(cfg, BUNDLED_TRAIN_TOKENS, 128) > 8000    # ~8,670 passes, trained anyway
    tiny = load_params(ROOT / "params.yaml", profile="tiny").pretrain  # 300 x 16 x 128 = 614,400
    assert check_corpus_size(tiny, 614_400 // MAX_EPOCHS, 128) == MAX_EPOCHS
    with pytest.raises(CorpusTooSmallError):
        check_corpus_size(tiny, 614_400 // MAX_EPOCHS - 1, 128)


def test_corpus_tokens_reads_the_summary_or_falls_back_to_slots():
    assert corpus_tokens({"splits": {"train": {"tokens": 123}}}, 10, 64) == 123
    assert corpus_tokens({}, 10, 64) == 640


@pytest.mark.data
def test_pretrain_stops_before_training_on_a_huge_schedule(pretrained_micro, tmp_path):
    """The stage itself: the micro data with a schedule of 100,000 steps stops before a step."""
    import shutil

    from electra.pretraining.trainer import pretrain
    from tests.conftest import micro_params

    from electra.core.files import read_json

    shutil.copytree(pretrained_micro / "outputs" / "tokenize", tmp_path / "outputs" / "tokenize")
    tokens = read_json(tmp_path / "outputs" / "tokenize" / "summary.json")["splits"]["train"]["tokens"]
    params = micro_params(tmp_path, "pretrain.max_steps=100000")
    with pytest.raises(CorpusTooSmallError, match=f"holds {tokens:,} training tokens"):
        pretrain(params.pretrain, progress=False)
    assert not (tmp_path / "outputs" / "pretrain" / "checkpoints").exists()
