"""GLUE readers on the real data files, their errors on bad input, and the metrics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from electra.tasks.glue import TASK_NAMES, TASKS, Example, get_task, metrics, read_task, task_file

ROOT = Path(__file__).resolve().parents[2]
GLUE = ROOT / "data" / "glue"

needs_data = pytest.mark.skipif(not GLUE.is_dir(), reason="data/glue not present (dvc pull)")


# ---------------------------------------------------------------- real files

@needs_data
@pytest.mark.parametrize(
    ("task", "split", "count"),
    [
        ("sst2", "dev", 872),
        ("mrpc", "dev", 408),
        ("rte", "dev", 277),
        ("cola", "dev", 1043),
        ("stsb", "dev", 1500),
        ("qnli", "dev", 5463),
        ("mrpc", "train", 3668),
        ("rte", "train", 2490),
        ("cola", "train", 8551),
        ("stsb", "train", 5749),
        ("sst2", "train", 67349),
    ],
)
def test_counts_match_manifest(task, split, count):
    examples = read_task(GLUE, task, split)
    assert len(examples) == count
    spec = TASKS[task]
    for ex in examples:
        assert ex.text_a
        assert (ex.text_b is not None) == spec.is_pair
        if spec.is_regression:
            assert isinstance(ex.label, float) and 0.0 <= ex.label <= 5.0
        else:
            assert isinstance(ex.label, int) and 0 <= ex.label < spec.num_labels


@needs_data
def test_first_rows_and_line_numbers():
    sst2 = read_task(GLUE, "sst2", "dev")
    assert sst2[0] == Example("it 's a charming and often affecting journey .", None, 1, 2)
    # MRPC starts with a byte-order mark: the header must still be recognised.
    mrpc = read_task(GLUE, "mrpc", "dev")
    assert mrpc[0].label == 1 and mrpc[0].line == 2
    assert mrpc[0].text_a.startswith("He said the foodservice pie business")
    assert mrpc[0].text_b.startswith('"The foodservice pie business')  # bare quote kept
    # CoLA has no header: its first example is on line 1.
    cola = read_task(GLUE, "cola", "dev")
    assert cola[0].line == 1 and cola[0].label == 1
    assert cola[0].text_a == "The sailors rode the breeze clear of the rocks."
    rte = read_task(GLUE, "rte", "dev")
    assert rte[0].label == 1  # not_entailment
    stsb = read_task(GLUE, "stsb", "dev")
    assert stsb[0].label == 5.0 and stsb[1].label == 4.75
    assert stsb[-1].line == 1501


@needs_data
def test_qnli_has_no_train_split():
    with pytest.raises(FileNotFoundError, match="QNLI"):
        read_task(GLUE, "qnli", "train")


def test_registry():
    assert set(TASKS) == set(TASK_NAMES)
    assert TASKS["stsb"].is_regression and TASKS["stsb"].num_labels == 1
    assert TASKS["rte"].labels == ("entailment", "not_entailment")
    assert {t: s.main_metric for t, s in TASKS.items()} == {
        "sst2": "accuracy", "mrpc": "accuracy", "rte": "accuracy",
        "cola": "mcc", "stsb": "spearman", "qnli": "accuracy",
    }
    assert task_file("data/glue", "stsb", "dev") == Path("data/glue/STS-B/dev.tsv")
    with pytest.raises(ValueError, match="unknown GLUE task 'mnli'"):
        get_task("mnli")


# ---------------------------------------------------------------- bad input

def _write(tmp_path: Path, folder: str, text: str, split: str = "dev") -> Path:
    path = tmp_path / folder / f"{split}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_missing_column(tmp_path):
    path = _write(tmp_path, "SST-2", "text\tlabel\ngood film\t1\n")
    with pytest.raises(ValueError, match=rf"{path}:1: missing column 'sentence'"):
        read_task(tmp_path, "sst2", "dev")


def test_unknown_label(tmp_path):
    path = _write(
        tmp_path, "RTE",
        "index\tsentence1\tsentence2\tlabel\n0\ta b\tc d\tentailment\n1\te f\tg h\tneutral\n",
    )
    with pytest.raises(ValueError, match=rf"{path}:3: unknown label 'neutral'"):
        read_task(tmp_path, "rte", "dev")


def test_short_row(tmp_path):
    path = _write(tmp_path, "CoLA", "gj04\t1\t\tA fine sentence.\ngj04\t0\t*\n")
    with pytest.raises(ValueError, match=rf"{path}:2: short row: expected 4 .* got 3"):
        read_task(tmp_path, "cola", "dev")


def test_too_many_fields(tmp_path):
    path = _write(tmp_path, "SST-2", "sentence\tlabel\nfine\t1\nstray\ttab\t0\n")
    with pytest.raises(ValueError, match=rf"{path}:3: too many fields"):
        read_task(tmp_path, "sst2", "dev")


def test_bad_score(tmp_path):
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    path = _write(tmp_path, "STS-B", header + "0\tg\tf\ty\t1\tn\tn\ta\tb\thigh\n")
    with pytest.raises(ValueError, match=rf"{path}:2: label 'high' is not a number"):
        read_task(tmp_path, "stsb", "dev")


def test_empty_sentence(tmp_path):
    path = _write(tmp_path, "SST-2", "sentence\tlabel\n \t1\n")
    with pytest.raises(ValueError, match=rf"{path}:2: empty sentence"):
        read_task(tmp_path, "sst2", "dev")


def test_blank_lines_skipped_and_bom_and_quotes(tmp_path):
    # BOM before the header, a bare quote in the text (QUOTE_NONE), a trailing blank line.
    _write(tmp_path, "MRPC", '\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n'
                             '1\t1\t2\tHe said "hi\tShe said hi\n\n')
    (ex,) = read_task(tmp_path, "mrpc", "dev")
    assert ex == Example('He said "hi', "She said hi", 1, 2)


def test_empty_file(tmp_path):
    path = _write(tmp_path, "SST-2", "")
    with pytest.raises(ValueError, match=rf"{path}:1: file is empty"):
        read_task(tmp_path, "sst2", "dev")


# ---------------------------------------------------------------- metrics

def test_accuracy_and_f1():
    labels = [1, 1, 1, 0, 0, 1]
    preds = [1, 0, 1, 1, 0, 1]
    # tp=3, fp=1, fn=1 -> precision 3/4, recall 3/4, f1 3/4; accuracy 4/6
    m = metrics("mrpc", preds, labels)
    assert m == pytest.approx({"accuracy": 4 / 6, "f1": 0.75, "main": 4 / 6})
    assert metrics("sst2", preds, labels) == pytest.approx({"accuracy": 4 / 6, "main": 4 / 6})


def test_logits_are_argmaxed():
    logits = np.array([[0.1, 2.0], [3.0, -1.0], [0.0, 0.5]])
    assert metrics("rte", logits, [1, 0, 0])["accuracy"] == pytest.approx(2 / 3)


def test_mcc():
    labels = [1, 1, 1, 0, 0, 1]
    preds = [1, 0, 1, 1, 0, 1]
    # tp=3 tn=1 fp=1 fn=1: (3*1 - 1*1) / sqrt(4*4*2*2) = 2/8
    m = metrics("cola", preds, labels)
    assert m["mcc"] == pytest.approx(0.25) and m["main"] == m["mcc"]
    # A constant prediction has no correlation: 0, not nan.
    assert metrics("cola", [1] * 6, labels)["mcc"] == 0.0


def test_pearson_spearman():
    labels = [1.0, 2.0, 3.0, 4.0]
    # Swapping two middle values: deviations [-1.5,.5,-.5,1.5] vs [-1.5,-.5,.5,1.5]
    # -> Pearson (2.25-.25-.25+2.25)/5 = 0.8; Spearman 1 - 6*2/(4*15) = 0.8.
    swapped = metrics("stsb", np.array([1.0, 3.0, 2.0, 4.0]).reshape(-1, 1), labels)
    assert swapped == pytest.approx({"pearson": 0.8, "spearman": 0.8, "main": 0.8})
    # A monotone but non-linear prediction: Spearman 1; Pearson deviations [-3,-2,-1,6]
    # -> (4.5+1-.5+9) / sqrt(50*5) = 14/sqrt(250).
    stretched = metrics("stsb", [1.0, 2.0, 3.0, 10.0], labels)
    assert stretched == pytest.approx(
        {"pearson": 14 / math.sqrt(250), "spearman": 1.0, "main": 1.0}
    )
    constant = metrics("stsb", [2.0] * 4, labels)
    assert constant["pearson"] == 0.0 and constant["spearman"] == 0.0
    assert all(math.isfinite(v) for v in constant.values())


def test_metrics_length_mismatch():
    with pytest.raises(ValueError, match="3 predictions for 2 labels"):
        metrics("sst2", [0, 1, 1], [0, 1])
