"""The MLflow pyfunc models the registry serves: discriminator, GLUE classifiers, QA and NER.

They are logged as code (``electra/registry/serving/*.py`` call ``mlflow.models.set_model``), so
a registered model loads by running this source, shipped with it, and never by
unpickling an object. Each one predicts with the code its model was evaluated with
(``electra.tasks.glue_task``, ``electra.tasks.qa``, ``electra.tasks.ner``). Kept free of heavy imports
until ``load_context``.

Inputs, locally (``mlflow.pyfunc.load_model(...).predict``) and over REST
(``POST /invocations``):

- one-text models (discriminator, single-sentence GLUE tasks, NER): a list of strings,
  or a DataFrame with a ``text`` column;
- sentence-pair GLUE tasks (MRPC, RTE, QNLI, STS-B): ``text`` and ``text_pair`` columns;
- QA: ``question`` and ``context`` columns.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from typing import Any

import mlflow.pyfunc
import pandas as pd

TEXT, TEXT_PAIR = "text", "text_pair"


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Silence the third-party chatter expected while loading, saving and logging our models.

    transformers' per-load "Loading weights" and "Writing model shards" bars, its LOAD
    REPORT table (a warning about keys it skipped or newly initialised) and MLflow's
    artifact download bars. Only for the block:
    verbosity, progress bars, the environment and the warning filters are restored
    after it, so nothing is silenced globally. Real errors still raise.
    """
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    env_key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    env_before = os.environ.get(env_key)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    os.environ[env_key] = "false"
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*newly initiali[sz]ed.*")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
        if env_before is None:
            os.environ.pop(env_key, None)
        else:
            os.environ[env_key] = env_before


def serving_settings(context) -> dict[str, Any]:
    """The settings a model was logged with: the ``settings`` artifact (a JSON file), else
    ``model_config`` (how earlier versions were logged; MLflow also copies a
    ``model_config`` into the run's params, where several models' settings collide)."""
    import json

    path = (context.artifacts or {}).get("settings")
    if path:
        with open(path, encoding="utf-8") as handle:
            return dict(json.load(handle))
    return dict(context.model_config or {})


def _cell(value: Any) -> str:
    """A text cell as a string (a missing cell, None or NaN, is the empty text)."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value)


def input_rows(model_input: Any, columns: tuple[str, ...]) -> list[dict[str, str]]:
    """``model_input`` as rows holding ``columns``, from whatever MLflow or a caller passes.

    Accepts a DataFrame (with the named columns; for one column, its first column when
    the name is absent: MLflow turns a list into a DataFrame with a column ``0``), a
    list of strings (one column only), a list of dicts, a dict of columns or one string.
    Raises ValueError naming the missing columns.
    """
    if isinstance(model_input, str):
        model_input = [model_input]
    if isinstance(model_input, dict):
        model_input = pd.DataFrame(model_input if all(isinstance(v, list | tuple) for v in model_input.values())
                                   else [model_input])
    if isinstance(model_input, pd.Series):
        model_input = model_input.to_frame(name=model_input.name if model_input.name is not None else 0)
    if not hasattr(model_input, "columns"):
        items = list(model_input)
        if all(isinstance(item, dict) for item in items):
            model_input = pd.DataFrame(items, columns=None if items else list(columns))
        elif len(columns) == 1:
            return [{columns[0]: _cell(item)} for item in items]
        else:
            raise ValueError(f"expected rows with the columns {list(columns)}, got {type(items[0]).__name__}s")
    frame = model_input
    names = list(frame.columns)
    if len(columns) == 1 and columns[0] not in names:
        if not names:
            raise ValueError(f"expected a {columns[0]!r} column")
        frame = frame.rename(columns={names[0]: columns[0]})
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"missing input columns {missing} (got {names})")
    return [{c: _cell(row[c]) for c in columns} for row in frame.to_dict("records")]


class DiscriminatorModel(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc: text in, per-token replaced-token probabilities out.

    Input: a list of strings (or a DataFrame with a ``text`` column). Output: one row
    per text with the word pieces and P(replaced) for each.
    """

    def load_context(self, context) -> None:
        import torch
        from transformers import AutoTokenizer, ElectraForPreTraining

        folder = context.artifacts["discriminator"]
        with quiet_loading():
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
            self.model = ElectraForPreTraining.from_pretrained(folder, dtype=torch.float32).eval()
        # Never past the positions the model has embeddings for.
        self.max_length = min(512, int(self.model.config.max_position_embeddings))

    def predict(self, context, model_input: pd.DataFrame, params=None):
        import torch

        texts = [row[TEXT] for row in input_rows(model_input, (TEXT,))]
        rows = []
        with torch.no_grad():
            for text in texts:
                enc = self.tokenizer(text, return_tensors="pt", truncation=True, max_length=self.max_length)
                probs = torch.sigmoid(self.model(**enc).logits[0]).tolist()
                tokens = self.tokenizer.convert_ids_to_tokens(enc["input_ids"][0])
                rows.append({"tokens": tokens, "replaced_probability": probs})
        return pd.DataFrame(rows, columns=["tokens", "replaced_probability"])


class SequenceClassifierModel(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc for a fine-tuned GLUE model: sentences (or pairs) in, label or score out.

    Input: ``text`` (and ``text_pair`` for a pair task: the setting ``pair``).
    Output: for a classifier, ``label`` (the label's name, from the model config's
    ``id2label``) and ``score`` (its softmax probability); for a regression task
    (STS-B), ``score`` (the predicted similarity). Encoded and batched by
    ``electra.tasks.glue_task.predict_loaded``, as the evaluate stage scored it.
    """

    def load_context(self, context) -> None:
        import torch
        from transformers import AutoTokenizer, ElectraForSequenceClassification

        folder = context.artifacts["model"]
        with quiet_loading():
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
            self.model = ElectraForSequenceClassification.from_pretrained(folder, dtype=torch.float32).eval()
        settings = serving_settings(context)
        self.pair = bool(settings.get("pair", False))
        self.max_seq_length = int(settings.get("max_seq_length", 128))
        config = self.model.config
        self.regression = config.problem_type == "regression" or int(config.num_labels) == 1
        id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
        self.labels = [id2label.get(i, str(i)) for i in range(int(config.num_labels))]

    def predict(self, context, model_input: pd.DataFrame, params=None):
        import numpy as np
        import torch

        from electra.tasks.glue import Example
        from electra.tasks.glue_task import predict_loaded

        columns = (TEXT, TEXT_PAIR) if self.pair else (TEXT,)
        rows = input_rows(model_input, columns)
        examples = [Example(text_a=row[TEXT], text_b=row[TEXT_PAIR] if self.pair else None, label=0, line=i)
                    for i, row in enumerate(rows)]
        outputs = predict_loaded(self.model, self.tokenizer, examples, batch_size=32,
                                 max_seq_length=self.max_seq_length, device=torch.device("cpu"))
        if self.regression:
            return pd.DataFrame({"score": [float(s) for s in outputs]})
        logits = np.asarray(outputs, dtype=np.float64).reshape(len(rows), len(self.labels))
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        best = probs.argmax(axis=1) if len(rows) else np.zeros(0, dtype=int)
        return pd.DataFrame({"label": [self.labels[i] for i in best],
                             "score": [float(probs[r, i]) for r, i in enumerate(best)]},
                            columns=["label", "score"])


class TokenClassifierModel(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc for the NER model: sentences in, their entities out (an empty list for none).

    Each text is split into words by the tokenizer's own pre-tokenizer (whitespace and
    punctuation, with character offsets), tagged as the evaluate stage tags words (the
    argmax at each word's first piece, ``electra.tasks.ner.encode``), and its BIO tags chunked
    into entities as ``conlleval`` reads them (``electra.tasks.conll.entity_spans``). Output:
    one row per text, ``entities``: ``[{"entity_group", "score", "word", "start",
    "end"}]`` with ``start``/``end`` character offsets into the text and ``score`` the
    mean probability of the entity's word tags. Words past ``max_seq_length`` pieces
    are not tagged.
    """

    def load_context(self, context) -> None:
        import torch
        from transformers import AutoTokenizer, ElectraForTokenClassification

        folder = context.artifacts["model"]
        with quiet_loading():
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
            self.model = ElectraForTokenClassification.from_pretrained(folder, dtype=torch.float32).eval()
        settings = serving_settings(context)
        self.max_seq_length = int(settings.get("max_seq_length", 128))
        self.id2label = {int(k): str(v) for k, v in self.model.config.id2label.items()}

    def _words(self, text: str) -> list[tuple[str, tuple[int, int]]]:
        import re

        pre = getattr(getattr(self.tokenizer, "backend_tokenizer", None), "pre_tokenizer", None)
        if pre is not None:
            return [(w, (int(s), int(e))) for w, (s, e) in pre.pre_tokenize_str(text) if w.strip()]
        return [(m.group(), m.span()) for m in re.finditer(r"\w+|[^\w\s]", text)]

    def predict(self, context, model_input: pd.DataFrame, params=None):
        import torch

        from electra.tasks.conll import OUTSIDE, Sentence, entity_spans
        from electra.tasks.ner import collate, encode, first_piece_positions
        from electra.tasks.recipe import longest_first_batches

        texts = [row[TEXT] for row in input_rows(model_input, (TEXT,))]
        words = [self._words(text) for text in texts]
        tagged = [i for i, w in enumerate(words) if w]
        tags = [[OUTSIDE] * len(w) for w in words]
        probs = [[0.0] * len(w) for w in words]
        sentences = [Sentence(tokens=[w for w, _ in words[i]], tags=[OUTSIDE] * len(words[i])) for i in tagged]
        features = encode(self.tokenizer, sentences, None, self.max_seq_length)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        with torch.no_grad():
            for idx in longest_first_batches([len(f["input_ids"]) for f in features], 32):
                batch = collate([features[j] for j in idx], pad_id)
                batch.pop("labels", None)
                p = torch.softmax(self.model(**batch).logits.float(), dim=-1)  # (B, T, labels)
                best_p, best = p.max(dim=-1)
                for row, j in enumerate(idx):
                    i = tagged[j]
                    for word, position in first_piece_positions(features[j]["word_ids"]).items():
                        tags[i][word] = self.id2label[int(best[row, position])]
                        probs[i][word] = float(best_p[row, position])
        out = []
        for text, spans, sentence_tags, sentence_probs in zip(texts, words, tags, probs, strict=True):
            entities = []
            for entity in entity_spans(sentence_tags):
                start, end = spans[entity.start][1][0], spans[entity.end - 1][1][1]
                score = sum(sentence_probs[entity.start:entity.end]) / (entity.end - entity.start)
                entities.append({"entity_group": entity.type, "score": float(score), "word": text[start:end],
                                 "start": int(start), "end": int(end)})
            out.append(entities)
        return pd.DataFrame({"entities": out}, columns=["entities"])


class QuestionAnsweringModel(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc: (question, context) rows in, the extracted answer span out.

    transformers 5 removed its question-answering pipeline, so the QA model ships
    with our own windowing and span search (``electra.tasks.qa``), the code it was
    evaluated with. Input: a DataFrame with ``question`` and ``context`` columns.
    Output: one ``answer`` per row (a substring of its context).
    """

    def load_context(self, context) -> None:
        import torch
        from transformers import AutoTokenizer, ElectraForQuestionAnswering

        folder = context.artifacts["model"]
        with quiet_loading():
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
            self.model = ElectraForQuestionAnswering.from_pretrained(folder, dtype=torch.float32).eval()
        self.settings = serving_settings(context)

    def predict(self, context, model_input: pd.DataFrame, params=None):
        from electra.tasks.qa import QAExample, predict_qa

        rows = input_rows(model_input, ("question", "context"))
        examples = [QAExample(id=str(i), title="", context=row["context"], question=row["question"], answers=())
                    for i, row in enumerate(rows)]
        answers = predict_qa(self.model, self.tokenizer, examples, batch_size=16,
                             max_seq_length=int(self.settings.get("max_seq_length", 384)),
                             doc_stride=int(self.settings.get("doc_stride", 128)), device="cpu")
        return pd.DataFrame({"answer": [answers.get(ex.id, "") for ex in examples]})
