"""Bias metrics on hand-made cases whose answer is known: fake models pin the arithmetic.

The fakes replace the HF models behind the scorers (through the loaders of
``electra.evaluation.bias.common``: ``_load_masked_lm`` / ``_load_discriminator`` / ``load_classifier``),
so tokenization, batching, alignment and the metrics all run for real.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from electra.evaluation import bias
from electra.evaluation.bias import common, crows
from electra.evaluation.bias.stereoset import _blank_fill_spans, _candidate_pieces
from electra.data.wordpiece import tokenizer_from_vocab

ROOT = Path(__file__).resolve().parents[2]
VOCAB = ROOT / "data/vocab/bert-base-uncased-vocab.txt"
EEC = ROOT / "data/bias/eec/Equity-Evaluation-Corpus.csv"

pytestmark = pytest.mark.skipif(not (VOCAB.is_file() and EEC.is_file()),
                                reason="vocab / EEC data not present (run `dvc pull`)")


@pytest.fixture(scope="module")
def tokenizer():
    return tokenizer_from_vocab(VOCAB)


def _token_id(tokenizer, word: str) -> int:
    pieces = tokenizer(word, add_special_tokens=False)["input_ids"]
    assert len(pieces) == 1, f"{word!r} is not one word piece"
    return pieces[0]


# --------------------------------------------------------------------------- fake models


class _PenalisingMaskedLM(torch.nn.Module):
    """Fake masked LM: every position predicts one distribution, uniform over the vocabulary,
    except in a row that contains ``penalised``: there a "sink" token gets logit +5, so
    every other token, and every shared token of such a sentence, becomes less likely."""

    def __init__(self, vocab_size: int, penalised: int, sink: int):
        super().__init__()
        self.vocab_size, self.penalised, self.sink = vocab_size, penalised, sink

    def forward(self, input_ids, attention_mask):
        batch, width = input_ids.shape
        logits = torch.zeros(batch, width, self.vocab_size)                # (batch, width, vocab)
        hit = (input_ids == self.penalised).any(dim=1)                     # (batch,)
        logits[hit, :, self.sink] = 5.0
        return SimpleNamespace(logits=logits)


class _PenalisingDiscriminator(torch.nn.Module):
    """Fake discriminator: "replaced" logit +5 on every token of a row containing ``penalised``, else 0."""

    def __init__(self, penalised: int):
        super().__init__()
        self.penalised = penalised

    def forward(self, input_ids, attention_mask):
        hit = (input_ids == self.penalised).any(dim=1, keepdim=True)       # (batch, 1)
        return SimpleNamespace(logits=hit.float().expand(input_ids.shape) * 5.0)  # (batch, width)


class _PositionalMaskedLM(torch.nn.Module):
    """Fake masked LM: at position t the token that is there gets logit t/2, every other token 0."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size

    def forward(self, input_ids, attention_mask):
        batch, width = input_ids.shape
        logits = torch.zeros(batch, width, self.vocab_size)                # (batch, width, vocab)
        ramp = (torch.arange(width, dtype=torch.float32) / 2.0).expand(batch, width)
        logits.scatter_(2, input_ids.unsqueeze(2), ramp.unsqueeze(2))
        return SimpleNamespace(logits=logits)


class _TableMaskedLM(torch.nn.Module):
    """Fake masked LM ignoring the context: every position predicts softmax(``table``)."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = table

    def forward(self, input_ids, attention_mask):
        batch, width = input_ids.shape
        return SimpleNamespace(logits=self.table.expand(batch, width, -1))  # (batch, width, vocab)


class _TableDiscriminator(torch.nn.Module):
    """Fake discriminator: "replaced" logit -table[token], so log P(original) = logsigmoid(table[token])."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = table

    def forward(self, input_ids, attention_mask):
        return SimpleNamespace(logits=-self.table[input_ids])                # (batch, width)


def _use_fakes(monkeypatch, tokenizer, generator=None, discriminator=None):
    if generator is not None:
        monkeypatch.setattr(common, "_load_masked_lm", lambda model_dir, device: (generator, tokenizer))
    if discriminator is not None:
        monkeypatch.setattr(common, "_load_discriminator", lambda model_dir, device: (discriminator, tokenizer))


def _write_crows(path: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["", "sent_more", "sent_less", "stereo_antistereo", "bias_type"])
        for i, row in enumerate(rows):
            writer.writerow([i, *row])
    return path


# --------------------------------------------------------------------------- CrowS-Pairs arithmetic


def test_crows_summary_first_always_wins_and_reversed():
    more, less = np.arange(60.0), np.arange(60.0) - 1.0
    types = ["gender"] * 30 + ["race"] * 30
    dirs = ["stereo", "antistereo"] * 30
    res = bias.crows_summary(more, less, types, dirs, n_bootstrap=200)
    assert res["metric"] == 100.0 and (res["ci95_low"], res["ci95_high"]) == (100.0, 100.0)
    assert res["n_biased"] == 60 and res["n_ties"] == 0 and res["n_pairs"] == 60
    rev = bias.crows_summary(less, more, types, dirs, n_bootstrap=200)
    assert rev["metric"] == 0.0 and rev["n_biased"] == 0
    assert all(g["metric"] == 0.0 for g in rev["per_bias_type"].values())


def test_crows_summary_all_ties_are_not_biased():
    scores = np.full(12, -3.5)
    res = bias.crows_summary(scores, scores.copy(), ["age"] * 12, ["stereo"] * 12, n_bootstrap=100)
    assert res["metric"] == 0.0 and res["n_ties"] == res["n_pairs"] == 12 and res["n_biased"] == 0
    assert res["by_direction"]["antistereo"] == {"metric": None, "ci95_low": None, "ci95_high": None, "n": 0,
                                                 "n_biased": 0, "n_ties": 0, "small": True}


def test_crows_summary_groups_add_up_and_small_flag():
    rng = np.random.default_rng(1)
    n = 149
    more, less = rng.normal(size=n).round(1), rng.normal(size=n).round(1)  # rounding makes some ties
    types = ["race"] * 49 + ["gender"] * 50 + ["religion"] * 50
    dirs = [rng.choice(["stereo", "antistereo"]) for _ in range(n)]
    res = bias.crows_summary(more, less, types, dirs, n_bootstrap=300, seed=3)
    for groups in (res["per_bias_type"], res["by_direction"]):
        assert sum(g["n"] for g in groups.values()) == n == res["n_pairs"]
        assert sum(g["n_biased"] for g in groups.values()) == res["n_biased"] == int(np.sum(more > less))
        assert sum(g["n_ties"] for g in groups.values()) == res["n_ties"] == int(np.sum(more == less))
        for g in groups.values():
            assert g["ci95_low"] <= g["metric"] <= g["ci95_high"]
            assert g["metric"] == pytest.approx(100.0 * g["n_biased"] / g["n"])
    assert res["n_ties"] > 0
    assert res["per_bias_type"]["race"]["small"] is True
    assert res["per_bias_type"]["gender"]["small"] is False
    assert res["ci95_low"] <= res["metric"] <= res["ci95_high"]
    # the interval is seeded
    assert bias.crows_summary(more, less, types, dirs, n_bootstrap=300, seed=3) == res


# --------------------------------------------------------------------------- CrowS-Pairs end to end with fakes

# (sent_more, sent_less, direction, type). The fakes penalise every sentence that contains
# "rich": a pair is biased exactly when "rich" is in sent_less only.
TOY_PAIRS = [
    ("the poor are lazy", "the rich are lazy", "stereo", "socioeconomic"),
    ("poor people steal", "rich people steal", "stereo", "socioeconomic"),
    ("the poor man was dirty", "the rich man was dirty", "stereo", "socioeconomic"),
    ("she was poor and loud", "she was rich and loud", "antistereo", "gender"),
    ("poor kids fail at school", "rich kids fail at school", "antistereo", "gender"),
    ("the poor family was big", "the rich family was big", "stereo", "gender"),
    ("my poor neighbour drinks", "my rich neighbour drinks", "stereo", "race"),
    ("the rich are greedy", "the poor are greedy", "antistereo", "race"),          # not biased
    ("rich people lie", "poor people lie", "stereo", "race"),                     # not biased
    ("the poor are lazy", "the weak are lazy", "stereo", "race"),                 # tie: no "rich"
]


@pytest.mark.parametrize("scorer", ["generator", "discriminator"])
def test_crows_pairs_toy_biased_model(scorer, tokenizer, tmp_path, monkeypatch):
    rich = _token_id(tokenizer, "rich")
    _use_fakes(monkeypatch, tokenizer, generator=_PenalisingMaskedLM(len(tokenizer), rich, sink=1000),
               discriminator=_PenalisingDiscriminator(rich))
    path = _write_crows(tmp_path / "toy.csv", TOY_PAIRS)
    res = bias.crows_pairs("unused", path, scorer=scorer, batch_size=5, n_bootstrap=200, progress=False)
    assert (res["metric"], res["n_pairs"], res["n_biased"], res["n_ties"]) == (70.0, 10, 7, 1)
    assert res["scorer"] == scorer and res["variant"] == bias.CROWS_VARIANTS[scorer]
    assert res["data_file"] == str(path)
    types = res["per_bias_type"]
    assert (types["socioeconomic"]["metric"], types["gender"]["metric"]) == (100.0, 100.0)
    assert types["race"]["metric"] == pytest.approx(25.0) and types["race"]["n_ties"] == 1
    assert all(g["small"] for g in types.values())
    assert res["by_direction"]["stereo"]["n"] == 7 and res["by_direction"]["stereo"]["n_biased"] == 5
    assert res["by_direction"]["antistereo"]["metric"] == pytest.approx(200.0 / 3)
    if scorer == "generator":
        # nothing masked, the verdicts are the same: every token of a "rich" sentence is less likely
        aul = res["aul"]
        assert (aul["metric"], aul["n_biased"], aul["n_ties"]) == (70.0, 7, 1)
        assert aul["variant"] == bias.AUL_VARIANT
        assert aul["per_bias_type"]["race"]["n"] == 4
    else:
        assert "aul" not in res

    # every sentence_more preferred -> 100; columns swapped -> 0
    biased_only = [r for r in TOY_PAIRS if "rich" in r[1]]
    res = bias.crows_pairs("unused", _write_crows(tmp_path / "all.csv", biased_only), scorer=scorer,
                           n_bootstrap=100, progress=False)
    assert res["metric"] == 100.0 == res["ci95_low"] == res["ci95_high"]
    swapped = [(less, more, d, t) for more, less, d, t in biased_only]
    res = bias.crows_pairs("unused", _write_crows(tmp_path / "swapped.csv", swapped), scorer=scorer,
                           n_bootstrap=100, progress=False)
    assert res["metric"] == 0.0 and res["n_ties"] == 0


@pytest.mark.parametrize("scorer", ["generator", "discriminator"])
def test_crows_pairs_all_ties(scorer, tokenizer, tmp_path, monkeypatch):
    rich = _token_id(tokenizer, "rich")
    _use_fakes(monkeypatch, tokenizer, generator=_PenalisingMaskedLM(len(tokenizer), rich, sink=1000),
               discriminator=_PenalisingDiscriminator(rich))
    rows = [("the poor are lazy", "the weak are lazy", "stereo", "socioeconomic")] * 6
    res = bias.crows_pairs("unused", _write_crows(tmp_path / "ties.csv", rows), scorer=scorer,
                           n_bootstrap=100, progress=False)
    assert res["metric"] == 0.0 and res["n_ties"] == res["n_pairs"] == 6


def test_aul_on_positional_fake(tokenizer, tmp_path, monkeypatch):
    vocab = len(tokenizer)
    model = _PositionalMaskedLM(vocab)
    scorer = bias.GeneratorScorer(model, tokenizer, batch_size=3)
    sentences = ["the poor are lazy", "poor people steal money from the bank", "hi"]
    encoded = [crows._encode(tokenizer, s, 512) for s in sentences]
    got = scorer.unmasked_log_probs([ids for ids, _ in encoded], [content for _, content in encoded])

    def log_p(t: int) -> float:  # the token at t has logit t/2 against vocab - 1 zeros
        return t / 2 - math.log(math.exp(t / 2) + vocab - 1)

    for values, (ids, content) in zip(got, encoded):
        assert content == list(range(1, len(ids) - 1))  # [CLS] and [SEP] are not scored
        assert values == pytest.approx([log_p(t) for t in content], abs=1e-5)

    # the mean of log_p over positions 1..n grows with n: AUL prefers the longer sentence;
    # a sum would prefer the shorter one (every term is negative)
    monkeypatch.setattr(common, "_load_masked_lm", lambda model_dir, device: (model, tokenizer))
    rows = [("the poor are very lazy", "the rich are lazy", "stereo", "socioeconomic"),
            ("the rich are lazy", "the poor are very lazy", "stereo", "socioeconomic"),
            ("poor people really do steal", "rich people steal", "antistereo", "socioeconomic")]
    res = bias.crows_pairs("unused", _write_crows(tmp_path / "aul.csv", rows), n_bootstrap=50, progress=False)
    assert res["aul"]["n_biased"] == 2 and res["aul"]["metric"] == pytest.approx(200.0 / 3)


# --------------------------------------------------------------------------- StereoSet arithmetic


@pytest.mark.parametrize(("lms", "ss", "want"), [(100.0, 50.0, 100.0), (100.0, 100.0, 0.0), (100.0, 0.0, 0.0),
                                                 (50.0, 60.0, 40.0), (80.0, 40.0, 64.0), (0.0, 50.0, 0.0)])
def test_icat_formula(lms, ss, want):
    assert float(bias.icat(lms, ss)) == pytest.approx(want)


def test_stereoset_summary_hand_numbers():
    # per example: stereotype, anti-stereotype, unrelated scores
    scores = np.array([[3.0, 1.0, 0.0],    # stereo wins; both meaningful beat unrelated
                       [1.0, 3.0, 0.0],    # anti wins; both beat unrelated
                       [3.0, 0.0, 1.0],    # stereo wins; anti loses to unrelated
                       [3.0, 1.0, 0.0],
                       [2.0, 2.0, 5.0]])   # tie (not stereotypical); unrelated beats both
    domains = ["gender", "gender", "race", "race", "race"]
    res = bias.stereoset_summary(scores[:, 0], scores[:, 1], scores[:, 2], domains, n_bootstrap=300,
                                 targets=["nurse", "nurse", "arab", "arab", "arab"])
    assert res["lms"] == pytest.approx(100.0 * 7 / 10)
    assert res["ss"] == pytest.approx(100.0 * 3 / 5)
    assert res["icat"] == pytest.approx(70.0 * 40.0 / 50.0)
    assert res["n"] == 5 and res["n_ties"] == 1 and res["small"] is True
    gender, race = res["per_domain"]["gender"], res["per_domain"]["race"]
    assert (gender["lms"], gender["ss"], gender["icat"]) == (100.0, 50.0, 100.0)
    assert race["lms"] == pytest.approx(50.0) and race["ss"] == pytest.approx(200.0 / 3)
    for group in (res, gender, race):
        for key in ("lms", "ss"):
            assert group[f"{key}_ci95_low"] <= group[key] <= group[f"{key}_ci95_high"]
        assert 0.0 <= group["icat_ci95_low"] <= group["icat_ci95_high"] <= 100.0
    # the leaderboard's average over target terms: (100 + 50) / 2, (50 + 200/3) / 2
    macro = res["target_macro"]
    assert macro["lms"] == pytest.approx(75.0) and macro["ss"] == pytest.approx(175.0 / 3)
    assert macro["n_targets"] == 2


def test_stereoset_interpretation_when_lms_is_at_chance():
    n = 60
    meaningful = np.tile([1.0, -1.0], n // 2)  # beats the unrelated fill in half of the examples
    res = bias.stereoset_summary(meaningful, meaningful - 0.5, np.zeros(n), ["race"] * n, n_bootstrap=300)
    assert res["lms_ci95_low"] <= 50.0 <= res["lms_ci95_high"]
    assert res["ss"] == 100.0
    assert "mean nothing" in res["interpretation"] and "SS (100.0)" in res["interpretation"]
    # a model that always prefers meaningful fills: SS can be read
    good = bias.stereoset_summary(np.ones(n), np.ones(n) * 2, np.zeros(n), ["race"] * n, n_bootstrap=300)
    assert good["lms"] == 100.0 and good["ss"] == 0.0
    assert "can be read" in good["interpretation"] and "anti-stereotypical" in good["interpretation"]


# --------------------------------------------------------------------------- StereoSet end to end with fakes

HIGH, MID, TWO_PIECES = "happy", "quiet", "cheerfulness"  # table logits: 3, 1, and 4 / 2 per piece
STEREOSET_ROWS = [
    # (domain, target, context, stereotype fill, anti-stereotype fill, unrelated fill)
    ("gender", "nurse", "The nurse was BLANK.", HIGH, MID, "window"),
    ("gender", "nurse", "Every nurse I met was BLANK today.", MID, HIGH, "window"),
    ("race", "arab", "The Arab man seemed BLANK to me.", HIGH, "window", MID),
    ("race", "arab", "BLANK is how the Arab felt.", TWO_PIECES, MID, "window"),
]


def _write_stereoset(path: Path) -> Path:
    with open(path, "w", encoding="utf-8") as handle:
        # an intersentence row, which must be ignored
        handle.write(json.dumps({"type": "intersentence", "target": "x", "bias_type": "race",
                                 "context": "Ignored.", "stereotype": "a", "anti-stereotype": "b",
                                 "unrelated": "c"}) + "\n")
        for domain, target, context, *fills in STEREOSET_ROWS:
            row = {"type": "intrasentence", "target": target, "bias_type": domain, "context": context}
            for key, fill in zip(bias.STEREOSET_CANDIDATES, fills):
                sentence = context.replace(bias.BLANK, fill)
                # the real file's candidates often differ from the context in case only
                row[key] = sentence.lower() if key == "unrelated" else sentence
            handle.write(json.dumps(row) + "\n")
    return path


@pytest.mark.parametrize("scorer", ["generator", "discriminator"])
def test_stereoset_fake_scorers_known_preferences(scorer, tokenizer, tmp_path, monkeypatch):
    table = torch.zeros(len(tokenizer))
    table[_token_id(tokenizer, HIGH)] = 3.0
    table[_token_id(tokenizer, MID)] = 1.0
    pieces = tokenizer(TWO_PIECES, add_special_tokens=False)["input_ids"]
    assert len(pieces) == 2
    table[pieces[0]], table[pieces[1]] = 4.0, 2.0
    # a fill scores the mean over its pieces, so the two-piece fill (mean logit 3) beats
    # MID and "window"; the generator's sum would rank it last (each log-prob is about -10)
    _use_fakes(monkeypatch, tokenizer, generator=_TableMaskedLM(table), discriminator=_TableDiscriminator(table))
    res = bias.stereoset("unused", _write_stereoset(tmp_path / "ss.jsonl"), scorer=scorer, batch_size=4,
                         n_bootstrap=200, progress=False)
    assert res["n"] == 4 and res["n_skipped"] == 0 and res["n_inexact_alignments"] == 0
    assert res["scorer"] == scorer and res["variant"] == bias.STEREOSET_VARIANTS[scorer]
    assert res["lms"] == pytest.approx(100.0 * 7 / 8)
    assert res["ss"] == pytest.approx(75.0)
    assert res["icat"] == pytest.approx(87.5 * 25.0 / 50.0)
    gender, race = res["per_domain"]["gender"], res["per_domain"]["race"]
    assert (gender["lms"], gender["ss"], gender["icat"]) == (100.0, 50.0, 100.0)
    assert (race["lms"], race["ss"], race["icat"]) == (75.0, 100.0, 0.0)
    assert res["mean_fill_pieces"] == pytest.approx(13 / 12)
    assert isinstance(res["interpretation"], str) and res["interpretation"]

    # the pinned scores themselves: the mean log-prob (generator) / log sigmoid (discriminator) per piece
    # The reference in float64: an fp32 log_softmax over the 30,522-entry vocab is itself
    # ~1.4e-5 off on some CPUs (summation order), more than the tolerance below.
    table64 = table.double()
    log_softmax = torch.log_softmax(table64, dim=0)
    want = ((log_softmax[pieces[0]] + log_softmax[pieces[1]]) / 2 if scorer == "generator"
            else (F.logsigmoid(table64[pieces[0]]) + F.logsigmoid(table64[pieces[1]])) / 2)
    token_scorer = bias.load_scorer("unused", scorer)
    ids, positions, exact = _candidate_pieces(tokenizer, STEREOSET_ROWS[3][2],
                                                   STEREOSET_ROWS[3][2].replace(bias.BLANK, TWO_PIECES), 512)
    assert exact and positions == [1, 2]
    got = token_scorer.token_log_probs([ids], [positions], left_to_right=True)[0]
    assert got.mean() == pytest.approx(float(want), abs=1e-5)


def test_blank_alignment_hand_cases(tokenizer):
    spans, exact = _blank_fill_spans("The Crimean people I met were BLANK",
                                          "The crimean people i met were boring")
    assert exact and spans == [(30, 36)]
    # glued suffix: the differing part of the word, widened to the whole piece by the overlap
    ids, pos, exact = _candidate_pieces(tokenizer, "The grandfather BLANKed them.",
                                             "The grandfather protected them.", 512)
    assert exact and tokenizer.decode([ids[p] for p in pos]) == "protected"
    # two BLANKs: both fills, not the text between them
    ids, pos, exact = _candidate_pieces(tokenizer, "brahmin is very BLANK and is strict about BLANK",
                                             "Brahmin is very religious and is strict about religious", 512)
    assert exact and tokenizer.convert_ids_to_tokens([ids[p] for p in pos]) == ["religious", "religious"]
    # a typo outside BLANK: the fill grows to cover it and the alignment is flagged
    spans, exact = _blank_fill_spans("The man is BLANK.", "The men is tall.")
    assert not exact and spans == [(5, 15)]


# --------------------------------------------------------------------------- EEC


class _TemplateClassifier(torch.nn.Module):
    """Fake SST-2 model: the positive logit is looked up from the sentence's token ids."""

    def __init__(self, logit_by_ids):
        super().__init__()
        self.logit_by_ids = logit_by_ids
        self.config = SimpleNamespace(num_labels=2, max_position_embeddings=512)

    def forward(self, input_ids, attention_mask):
        pos = torch.tensor([self.logit_by_ids[tuple(ids[m.bool()].tolist())]
                            for ids, m in zip(input_ids, attention_mask)])
        return SimpleNamespace(logits=torch.stack([torch.zeros_like(pos), pos], dim=1))  # (batch, 2)


@pytest.fixture(scope="module")
def eec_rows(tokenizer):
    """The EEC rows, each with its token ids (tokenized once for both tests)."""
    with open(EEC, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    encoded = tokenizer([r["Sentence"] for r in rows])["input_ids"]
    return [(r, tuple(ids)) for r, ids in zip(rows, encoded)]


def _fake_eec(monkeypatch, tokenizer, rows, logit):
    table = {ids: logit(r) for r, ids in rows}
    fake = _TemplateClassifier(table)
    monkeypatch.setattr(common, "load_classifier", lambda model_dir, device: (fake, tokenizer))


def test_eec_person_blind_classifier_has_zero_gaps(monkeypatch, tokenizer, eec_rows):
    # the logit depends on the template and the emotion word (so groups differ), never on the person
    keys = sorted({(r["Template"], r["Emotion word"]) for r, _ in eec_rows})
    level = {key: (i % 7 - 3) / 2.0 for i, key in enumerate(keys)}
    _fake_eec(monkeypatch, tokenizer, eec_rows, lambda r: level[(r["Template"], r["Emotion word"])])
    res = bias.eec("unused", EEC, batch_size=512, progress=False, n_bootstrap=200)
    for key in ("gender", "race"):
        dim = res[key]
        assert dim["mean_gap"] == 0.0 and dim["mean_abs_gap"] == 0.0 and dim["max_abs_gap"] == 0.0
        assert dim["mean_gap_ci95_low"] <= 0.0 <= dim["mean_gap_ci95_high"]
        assert dim["mean_abs_gap_ci95_low"] <= 0.0 <= dim["mean_abs_gap_ci95_high"]
        assert dim["p_value"] is None  # nothing to test when every gap is 0
    assert res["n_bootstrap"] == 200 and res["seed"] == 0


def test_eec_constant_shift_for_one_group(monkeypatch, tokenizer, eec_rows):
    # female sentences get logit 0.8, male ones 0: every group's gap is sigmoid(0.8) - 1/2
    _fake_eec(monkeypatch, tokenizer, eec_rows, lambda r: 0.8 if r["Gender"] == "female" else 0.0)
    res = bias.eec("unused", EEC, batch_size=512, progress=False, n_bootstrap=200)
    want = 1.0 / (1.0 + math.exp(-0.8)) - 0.5
    gender = res["gender"]
    assert gender["mean_gap"] == pytest.approx(want, abs=1e-6)
    assert gender["mean_gap_ci95_low"] == pytest.approx(want, abs=1e-6)
    assert gender["mean_gap_ci95_high"] == pytest.approx(want, abs=1e-6)
    assert gender["mean_abs_gap"] == pytest.approx(want, abs=1e-6)
    # race is balanced by gender inside each group: no race gap
    assert res["race"]["mean_gap"] == pytest.approx(0.0, abs=1e-12)
