"""The MLflow pyfunc models the registry serves: the discriminator and the QA model.

They are logged as code (``electra/serving/*.py`` call ``mlflow.models.set_model``), so
a registered model loads by running this source, shipped with it, and never by
unpickling an object. Kept free of heavy imports until ``load_context``.
"""

from __future__ import annotations

import mlflow.pyfunc


class DiscriminatorModel(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc: text in, per-token replaced-token probabilities out.

    Input: a DataFrame with a ``text`` column (or a list of strings). Output: one
    row per text with the word pieces and P(replaced) for each.
    """

    def load_context(self, context) -> None:
        from transformers import AutoTokenizer, ElectraForPreTraining

        folder = context.artifacts["discriminator"]
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = ElectraForPreTraining.from_pretrained(folder).eval()

    def predict(self, context, model_input, params=None):
        import pandas as pd
        import torch

        texts = list(model_input["text"]) if hasattr(model_input, "columns") else list(model_input)
        rows = []
        with torch.no_grad():
            for text in texts:
                enc = self.tokenizer(text, return_tensors="pt", truncation=True, max_length=512)
                probs = torch.sigmoid(self.model(**enc).logits[0]).tolist()
                tokens = self.tokenizer.convert_ids_to_tokens(enc["input_ids"][0])
                rows.append({"tokens": tokens, "replaced_probability": probs})
        return pd.DataFrame(rows)


class QuestionAnsweringModel(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc: (question, context) rows in, the extracted answer span out.

    transformers 5 removed its question-answering pipeline, so the QA model ships
    with our own windowing and span search (``electra.qa``), the code it was
    evaluated with. Input: a DataFrame with ``question`` and ``context`` columns.
    Output: one ``answer`` per row (a substring of its context).
    """

    def load_context(self, context) -> None:
        from transformers import AutoTokenizer, ElectraForQuestionAnswering

        folder = context.artifacts["model"]
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = ElectraForQuestionAnswering.from_pretrained(folder).eval()
        self.settings = dict(context.model_config or {})

    def predict(self, context, model_input, params=None):
        import pandas as pd

        from electra.qa import QAExample, predict_qa

        examples = [QAExample(id=str(i), title="", context=str(row["context"]), question=str(row["question"]),
                              answers=()) for i, row in enumerate(model_input.to_dict("records"))]
        answers = predict_qa(self.model, self.tokenizer, examples, batch_size=16,
                             max_seq_length=int(self.settings.get("max_seq_length", 384)),
                             doc_stride=int(self.settings.get("doc_stride", 128)), device="cpu")
        return pd.DataFrame({"answer": [answers.get(ex.id, "") for ex in examples]})
