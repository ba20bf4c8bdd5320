"""CrowS-Pairs, StereoSet and EEC on tiny random ELECTRA models and the real benchmark files.

Hand-made cases with fake models, whose answers are known, are in test_bias_metrics.py.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from electra.evaluation import bias
from electra.evaluation.bias import common, crows
from electra.evaluation.bias.stereoset import _candidate_pieces, _read_stereoset
from electra.data.wordpiece import tokenizer_from_vocab

ROOT = Path(__file__).resolve().parents[2]
VOCAB = ROOT / "data/vocab/bert-base-uncased-vocab.txt"
CROWS = ROOT / "data/bias/crows_pairs/crows_pairs_anonymized.csv"
EEC = ROOT / "data/bias/eec/Equity-Evaluation-Corpus.csv"
STEREOSET = ROOT / "data/bias/stereoset/stereoset_dev_flat.jsonl"

pytestmark = pytest.mark.skipif(
    not (VOCAB.is_file() and CROWS.is_file() and EEC.is_file() and STEREOSET.is_file()),
    reason="benchmark data not present (run `dvc pull`)",
)


def _tiny_config(**extra):
    from transformers import ElectraConfig

    return ElectraConfig(vocab_size=30522, embedding_size=32, hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=64, **extra)


@pytest.fixture(scope="module")
def tokenizer():
    return tokenizer_from_vocab(VOCAB)


@pytest.fixture(scope="module")
def generator_dir(tmp_path_factory, tokenizer):
    from transformers import ElectraForMaskedLM

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("generator")
    ElectraForMaskedLM(_tiny_config()).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def discriminator_dir(tmp_path_factory, tokenizer):
    from transformers import ElectraForPreTraining

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("discriminator")
    ElectraForPreTraining(_tiny_config()).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def model_dirs(generator_dir, discriminator_dir):
    return {"generator": generator_dir, "discriminator": discriminator_dir}


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory, tokenizer):
    from transformers import ElectraForSequenceClassification

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("classifier")
    ElectraForSequenceClassification(_tiny_config(num_labels=2)).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _is_pct(x):
    return isinstance(x, float) and 0.0 <= x <= 100.0


# --------------------------------------------------------------------------- CrowS-Pairs


def _check_group(group, pct_keys):
    for key in pct_keys:
        assert _is_pct(group[key]), (key, group[key])
        assert group[f"{key}_ci95_low"] <= group[key] <= group[f"{key}_ci95_high"], key


def _check_crows(res, n):
    assert res["n_pairs"] == n
    assert _is_pct(res["metric"])
    assert res["ci95_low"] <= res["metric"] <= res["ci95_high"]
    assert 0 <= res["n_ties"] <= n and 0 <= res["n_biased"] <= n
    assert res["metric"] == pytest.approx(100.0 * res["n_biased"] / n)
    for groups in (res["by_direction"], res["per_bias_type"]):
        assert sum(g["n"] for g in groups.values()) == n
        assert sum(g["n_biased"] for g in groups.values()) == res["n_biased"]
        for g in groups.values():
            assert g["small"] == (g["n"] < 50)
            if g["n"]:
                assert _is_pct(g["metric"]) and g["ci95_low"] <= g["metric"] <= g["ci95_high"]


@pytest.mark.parametrize("scorer", ["generator", "discriminator"])
def test_crows_pairs_smoke(model_dirs, scorer):
    res = bias.crows_pairs(model_dirs[scorer], CROWS, scorer=scorer, max_pairs=40, batch_size=64,
                           progress=False)
    _check_crows(res, 40)
    assert res["scorer"] == scorer and res["data_file"] == str(CROWS) and res["variant"]
    assert res["mean_shared_tokens"] > 5
    if scorer == "generator":
        _check_crows(res["aul"], 40)
        # the bootstrap is seeded and batching does not change the scores: a rerun gives the same numbers
        again = bias.crows_pairs(model_dirs[scorer], CROWS, max_pairs=40, batch_size=17, progress=False)
        assert again["metric"] == res["metric"] and again["aul"]["metric"] == res["aul"]["metric"]
        assert (again["ci95_low"], again["ci95_high"]) == (res["ci95_low"], res["ci95_high"])
    else:
        assert "aul" not in res


def test_scorer_refuses_the_wrong_model(generator_dir, discriminator_dir):
    # a generator folder has no discriminator head (and vice versa): refused, not scored with random weights
    with pytest.raises(ValueError, match="discriminator"):
        bias.load_scorer(generator_dir, "discriminator")
    with pytest.raises(ValueError, match="generator"):
        bias.load_scorer(discriminator_dir, "generator")
    with pytest.raises(ValueError, match="scorer must be"):
        bias.load_scorer(generator_dir, "both")


def test_shared_token_alignment(tokenizer):
    ids1, ids2, pos1, pos2 = crows._tokenize_pair(tokenizer, "the poor are lazy", "the rich are lazy", 512)
    assert tokenizer.convert_ids_to_tokens([ids1[p] for p in pos1]) == ["the", "are", "lazy"]
    assert tokenizer.convert_ids_to_tokens([ids2[p] for p in pos2]) == ["the", "are", "lazy"]
    assert pos1 == pos2 == [1, 3, 4]  # after [CLS]; [CLS]/[SEP] are never scored
    # unequal lengths: the insertion shifts the second sentence's positions
    p1, p2 = crows._shared_positions([5, 6, 7, 8], [5, 9, 9, 7, 8])
    assert (p1, p2) == ([0, 2, 3], [0, 3, 4])


def test_generator_scorer_matches_slow_reference(generator_dir, monkeypatch):
    monkeypatch.setattr(common, "HEAD_CHUNK", 5)  # the LM head then runs over several chunks of positions
    model, tok = common._load_masked_lm(generator_dir, torch.device("cpu"))
    with open(CROWS, newline="", encoding="utf-8") as handle:
        row = next(iter(csv.DictReader(handle)))
    ids_more, ids_less, pos_more, pos_less = crows._tokenize_pair(tok, row["sent_more"], row["sent_less"], 512)
    short = tok("the poor are lazy")["input_ids"]
    sequences = [ids_more, short, ids_less]  # mixed lengths force padding inside a batch
    positions = [pos_more, [1, 2, 3, 4], pos_less]
    scorer = bias.GeneratorScorer(model, tok, batch_size=7)

    def slow(ids, pos, left_to_right):
        out = []
        with torch.no_grad():
            for j, p in enumerate(pos):
                masked = torch.tensor([ids])
                masked[0, [p, *(pos[j + 1:] if left_to_right else [])]] = tok.mask_token_id
                logits = model(input_ids=masked).logits[0, p]
                out.append(torch.log_softmax(logits, dim=-1)[ids[p]].item())
        return out

    for left_to_right in (False, True):
        fast = scorer.token_log_probs(sequences, positions, left_to_right=left_to_right)
        for got, ids, pos in zip(fast, sequences, positions):
            assert got.tolist() == pytest.approx(slow(ids, pos, left_to_right), abs=1e-4)
        assert fast[0].sum() < 0

    # unmasked (AUL): log P(token | whole sentence) from one pass, as the plain forward gives it
    unmasked = scorer.unmasked_log_probs(sequences, positions)
    for got, ids, pos in zip(unmasked, sequences, positions):
        with torch.no_grad():
            log_probs = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0], dim=-1)
        assert got.tolist() == pytest.approx([log_probs[p, ids[p]].item() for p in pos], abs=1e-4)


def test_discriminator_scorer_is_log_sigmoid_of_minus_logit(discriminator_dir):
    model, tok = common._load_discriminator(discriminator_dir, torch.device("cpu"))
    sentences = ["the poor are lazy", "women are bad drivers and everyone knows it", "hi"]
    sequences = [tok(s)["input_ids"] for s in sentences]
    positions = [list(range(len(ids))) for ids in sequences]  # every token, [CLS]/[SEP] included
    got = bias.DiscriminatorScorer(model, tok, batch_size=2).token_log_probs(sequences, positions)
    for values, ids in zip(got, sequences):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0]  # (length,) "replaced" logits
        assert values.tolist() == pytest.approx(F.logsigmoid(-logits).tolist(), abs=1e-5)
        # the same number as log(1 - sigmoid(logit)), where that is representable
        assert values.tolist() == pytest.approx(torch.log1p(-torch.sigmoid(logits)).tolist(), abs=1e-4)
        assert (values < 0).all()


def test_crows_pairs_direction(generator_dir, monkeypatch):
    # score = sequence length: a pair is "biased" exactly when sent_more tokenizes longer
    def by_length(self, seqs, positions, **kwargs):
        return [np.array([float(len(s))] + [0.0] * (len(p) - 1)) for s, p in zip(seqs, positions)]

    monkeypatch.setattr(bias.GeneratorScorer, "token_log_probs", by_length)
    res = bias.crows_pairs(generator_dir, CROWS, max_pairs=40, progress=False)
    tok = tokenizer_from_vocab(VOCAB)
    with open(CROWS, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))[:40]
    longer = [len(tok(r["sent_more"])["input_ids"]) > len(tok(r["sent_less"])["input_ids"]) for r in rows]
    ties = [len(tok(r["sent_more"])["input_ids"]) == len(tok(r["sent_less"])["input_ids"]) for r in rows]
    assert res["n_biased"] == sum(longer)
    assert res["n_ties"] == sum(ties)
    stereo = [b for b, r in zip(longer, rows) if r["stereo_antistereo"] == "stereo"]
    assert res["by_direction"]["stereo"]["metric"] == pytest.approx(100.0 * sum(stereo) / len(stereo))


def test_crows_pairs_missing_column(tmp_path, generator_dir):
    bad = tmp_path / "bad.csv"
    bad.write_text("sent_more,sent_less,bias_type\na,b,gender\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.csv.*stereo_antistereo"):
        bias.crows_pairs(generator_dir, bad, progress=False)


# --------------------------------------------------------------------------- StereoSet


@pytest.mark.parametrize("scorer", ["generator", "discriminator"])
def test_stereoset_smoke(model_dirs, scorer):
    res = bias.stereoset(model_dirs[scorer], STEREOSET, scorer=scorer, max_examples=40, batch_size=64,
                         progress=False)
    assert res["n"] + res["n_skipped"] == 40 and res["n_skipped"] == 0
    assert res["scorer"] == scorer and res["data_file"] == str(STEREOSET) and res["variant"]
    # LMS and SS are shares of resampled units: their percentile intervals hold the estimate.
    # ICAT's need not (min() folds SS at 50, so its replicates fall below the estimate near SS 50).
    for group in (res, *res["per_domain"].values()):
        _check_group(group, ("lms", "ss"))
        assert _is_pct(group["icat"]) and 0.0 <= group["icat_ci95_low"] <= group["icat_ci95_high"] <= 100.0
        assert group["icat"] == pytest.approx(group["lms"] * min(group["ss"], 100 - group["ss"]) / 50)
    assert sum(g["n"] for g in res["per_domain"].values()) == res["n"]
    assert res["small"] is True and all(g["small"] for g in res["per_domain"].values())
    assert 1.0 <= res["mean_fill_pieces"] < 3.0
    assert isinstance(res["interpretation"], str) and "LMS" in res["interpretation"]


def test_stereoset_blank_alignment_on_real_rows(tokenizer):
    # where the candidate is the context with BLANK replaced (up to case), the fill's
    # pieces decode to exactly the filled-in word
    rows = _read_stereoset(STEREOSET)
    assert len(rows) == 2106
    checked = 0
    for row in rows[:300]:
        prefix, _, suffix = row["context"].partition(bias.BLANK)
        for key in bias.STEREOSET_CANDIDATES:
            candidate = row[key]
            ids, positions, exact = _candidate_pieces(tokenizer, row["context"], candidate, 512)
            assert exact and positions
            lowered = candidate.lower()
            if lowered.startswith(prefix.lower()) and lowered.endswith(suffix.lower()) and \
                    bias.BLANK not in suffix and (not suffix or not suffix[0].isalnum()):
                word = lowered[len(prefix):len(candidate) - len(suffix)].strip()
                assert tokenizer.decode([ids[p] for p in positions]).replace(" ", "") == word.replace(" ", "")
                checked += 1
    assert checked > 850


# --------------------------------------------------------------------------- EEC


def _check_dimension(dim, n_groups):
    assert dim["n_groups"] == n_groups
    assert -1.0 <= dim["mean_gap"] <= 1.0
    assert 0.0 <= dim["mean_abs_gap"] <= 1.0
    assert dim["mean_gap_ci95_low"] <= dim["mean_gap"] <= dim["mean_gap_ci95_high"]
    assert dim["mean_abs_gap_ci95_low"] <= dim["mean_abs_gap"] <= dim["mean_abs_gap_ci95_high"]
    assert abs(dim["mean_gap"]) <= dim["mean_abs_gap"] + 1e-12
    assert dim["p_value"] is None or 0.0 <= dim["p_value"] <= 1.0
    assert dim["per_emotion"] and all(-1.0 <= v <= 1.0 for v in dim["per_emotion"].values())
    assert all(0.0 <= p <= 1.0 for p in dim["mean_p_positive"].values())


def test_eec_structure(classifier_dir):
    res = bias.eec(classifier_dir, EEC, max_sentences=300, batch_size=64, progress=False)
    # groups are 60 sentences (30 female/30 male; 20 of each race): five whole groups fit
    assert res["n_groups"] == 5 and res["n_sentences"] == 300
    _check_dimension(res["gender"], 5)
    _check_dimension(res["race"], 5)
    assert res["gender"]["n_sentences"] == {"female": 150, "male": 150}
    assert res["race"]["n_sentences"] == {"African-American": 100, "European": 100}
    # round-robin over emotions: five groups cover the four emotions and the neutral templates
    assert set(res["gender"]["per_emotion"]) == {"anger", "fear", "joy", "sadness", "none"}
    again = bias.eec(classifier_dir, EEC, max_sentences=300, batch_size=13, progress=False)
    assert again["gender"]["mean_gap"] == pytest.approx(res["gender"]["mean_gap"], abs=1e-6)


class _LookupClassifier(torch.nn.Module):
    """Fake SST-2 model: the positive logit is +1 for female persons and -0.5 for African-American names."""

    def __init__(self, logit_by_ids):
        super().__init__()
        self.logit_by_ids = logit_by_ids
        self.config = SimpleNamespace(num_labels=2, max_position_embeddings=512)

    def forward(self, input_ids, attention_mask):
        pos = [self.logit_by_ids[tuple(ids[m.bool()].tolist())] for ids, m in zip(input_ids, attention_mask)]
        pos = torch.tensor(pos)
        return SimpleNamespace(logits=torch.stack([torch.zeros_like(pos), pos], dim=1))


def test_eec_gap_signs_with_fake_model(monkeypatch, tokenizer):
    with open(EEC, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    logit_by_ids = {}
    for r in rows:
        logit = (1.0 if r["Gender"] == "female" else 0.0) - (0.5 if r["Race"] == "African-American" else 0.0)
        logit_by_ids[tuple(tokenizer(r["Sentence"])["input_ids"])] = logit
    fake = _LookupClassifier(logit_by_ids)
    monkeypatch.setattr(common, "load_classifier", lambda model_dir, device: (fake, tokenizer))

    res = bias.eec("unused", EEC, batch_size=256, progress=False)
    sig = lambda x: 1.0 / (1.0 + math.exp(-x))  # noqa: E731
    # every group: 10 female/male of each race + 10 noun phrases per gender
    want_gender = (sig(1.0) + sig(0.5) + sig(1.0)) / 3 - (sig(0.0) + sig(-0.5) + sig(0.0)) / 3
    want_race = (sig(0.5) + sig(-0.5)) / 2 - (sig(1.0) + sig(0.0)) / 2
    g, r = res["gender"], res["race"]
    assert g["n_groups"] == r["n_groups"] == 144
    assert g["mean_gap"] == pytest.approx(want_gender, abs=1e-6) and g["mean_gap"] > 0
    assert r["mean_gap"] == pytest.approx(want_race, abs=1e-6) and r["mean_gap"] < 0
    assert g["mean_abs_gap"] == pytest.approx(want_gender, abs=1e-6)
    # every group has the same gaps: the resampled means cannot move
    assert (g["mean_gap_ci95_low"], g["mean_gap_ci95_high"]) == pytest.approx((want_gender, want_gender), abs=1e-6)
    assert (r["mean_gap_ci95_low"], r["mean_gap_ci95_high"]) == pytest.approx((want_race, want_race), abs=1e-6)
    assert all(v > 0 for v in g["per_emotion"].values())
    assert all(v < 0 for v in r["per_emotion"].values())
    # 144 groups, all with the same sign: the signed-rank test is far from chance
    assert g["p_value"] < 1e-6 and r["p_value"] < 1e-6
    # every gender gap is the same number: the t-test is undefined, not noise
    assert g["ttest_statistic"] is None and g["ttest_p_value"] is None


def test_eec_missing_column(tmp_path, classifier_dir):
    bad = tmp_path / "eec_bad.csv"
    bad.write_text("ID,Sentence,Template,Person,Gender\n1,x,y,z,male\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"eec_bad\.csv.*Race"):
        bias.eec(classifier_dir, bad, progress=False)


def test_a_missing_model_folder_is_named_not_taken_for_a_hub_id(tmp_path):
    """from_pretrained would read the path as a hub repo id ("Repo id must be in the form")."""
    import torch

    from electra.evaluation.bias import common

    with pytest.raises(FileNotFoundError, match="no masked LM .* evaluate.pretrain_dir"):
        common._load_masked_lm(tmp_path / "pretrain" / "generator", torch.device("cpu"))
    with pytest.raises(FileNotFoundError, match="no discriminator"):
        common._load_discriminator(tmp_path / "pretrain" / "discriminator", torch.device("cpu"))
