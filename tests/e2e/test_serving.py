"""Every registered model answers: through ``mlflow.pyfunc`` and over REST (``mlflow models serve``).

One micro pipeline (SST-2, MRPC, STS-B, QA, NER) is fine-tuned, evaluated and registered
once for the module, on an embedded sqlite store. Each champion is loaded by alias and
asked the questions a user asks; then the discriminator, SST-2, STS-B (a pair task), QA
and NER are served at once, as the README says (``mlflow models serve -m
models:/<name>@champion --env-manager local``), each on its own free port of 127.0.0.1,
and must answer a real ``POST /invocations`` with what the model answers locally.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from tests.conftest import DATA, micro_params
from tests.e2e.services import free_port, stop_process, wait_http

pytestmark = pytest.mark.slow

TASKS = ("sst2", "mrpc", "stsb", "qa", "ner")
SENTENCES = ["a wonderful , moving film .", "a dull and lifeless mess ."]
PAIRS = pd.DataFrame({"text": ["the chef cooked the meal .", "a man is playing a guitar ."],
                      "text_pair": ["the meal was cooked by the chef .", "a woman is slicing an onion ."]})
QUESTIONS = pd.DataFrame({"question": ["Who cooked the meal?"],
                          "context": ["The chef cooked the meal in the old kitchen of the castle."]})
NER_TEXTS = ["John lives in Paris", "", "the weather is nice today ."]

# What a client sends over REST: one-text models take {"inputs": [...]}, the others records.
REST = {
    "electra-discriminator": {"inputs": ["the chef cooked the meal ."]},
    "electra-sst2": {"inputs": SENTENCES},
    "electra-stsb": {"dataframe_records": PAIRS.to_dict("records")},
    "electra-qa": {"dataframe_records": QUESTIONS.to_dict("records")},
    "electra-ner": {"inputs": NER_TEXTS},
}


# --------------------------------------------------------------------------- without a model


def test_logged_requirements_install_from_pypi(monkeypatch):
    """A local version label (``+cpu``, ``+cu121``) names a build PyPI does not serve."""
    from packaging.requirements import Requirement

    from electra.registry import register

    assert register.public_version("2.13.0+cpu") == "2.13.0"
    assert register.public_version("2.13.0+cu121") == "2.13.0"
    assert register.public_version("5.24.0") == "5.24.0"
    versions = {"torch": "2.13.0+cpu", "transformers": "5.24.0", "tokenizers": "0.23.3+local.1"}
    monkeypatch.setattr(register.importlib.metadata, "version", lambda name: versions.get(name, "1.0"))
    reqs = register.pip_requirements()
    assert "torch==2.13.0" in reqs and "tokenizers==0.23.3" in reqs and "transformers==5.24.0" in reqs
    for req in reqs:
        assert not [s for s in Requirement(req).specifier if s.version != s.version.split("+")[0]], req


def test_glue_label_names_follow_the_data():
    """Label ids in GLUE's files: SST-2 1 = positive, MRPC 1 = paraphrase, CoLA 1 = acceptable;
    RTE and QNLI write the names themselves."""
    from electra.tasks.glue import get_task, read_task
    from electra.registry.register import label_names

    assert label_names("sst2") == ["negative", "positive"]
    assert label_names("mrpc") == ["not_equivalent", "equivalent"]
    assert label_names("cola") == ["unacceptable", "acceptable"]
    assert label_names("rte") == label_names("qnli") == ["entailment", "not_entailment"]
    assert label_names("rte") == list(get_task("rte").labels)       # the ids the model was trained on
    assert label_names("stsb") is None
    glue = DATA / "glue"
    charming = next(ex for ex in read_task(glue, "sst2", "dev") if "charming and often affecting" in ex.text_a)
    assert label_names("sst2")[charming.label] == "positive"
    sailors = next(ex for ex in read_task(glue, "cola", "dev") if ex.text_a.startswith("The sailors rode"))
    assert label_names("cola")[sailors.label] == "acceptable"


def test_input_rows_take_what_mlflow_and_callers_pass():
    from electra.registry.pyfunc import input_rows

    assert input_rows(["a", "b"], ("text",)) == [{"text": "a"}, {"text": "b"}]
    assert input_rows(pd.DataFrame({0: ["a"]}), ("text",)) == [{"text": "a"}]     # MLflow's list -> frame
    assert input_rows(pd.DataFrame({"text": ["a", None]}), ("text",)) == [{"text": "a"}, {"text": ""}]
    assert input_rows([{"text": "a", "text_pair": "b"}], ("text", "text_pair")) == [{"text": "a", "text_pair": "b"}]
    assert input_rows({"text": ["a"], "text_pair": ["b"]}, ("text", "text_pair")) == [{"text": "a", "text_pair": "b"}]
    with pytest.raises(ValueError, match="text_pair"):
        input_rows(pd.DataFrame({"text": ["a"]}), ("text", "text_pair"))


# --------------------------------------------------------------------------- registered models


@pytest.fixture(scope="module")
def registry(pretrained_micro, tmp_path_factory) -> str:
    """The micro models fine-tuned on TASKS, evaluated and registered; the store's tracking URI."""
    from electra.pipeline.stages import run_stage

    tmp = tmp_path_factory.mktemp("serving")
    params = micro_params(
        pretrained_micro, f"finetune.tasks=[{','.join(TASKS)}]",
        f"finetune.output_dir={tmp}/finetune", f"evaluate.finetune_dir={tmp}/finetune",
        f"register.finetune_dir={tmp}/finetune", f"evaluate.output_dir={tmp}/evaluate",
        f"register.evaluate_dir={tmp}/evaluate", f"register.output_dir={tmp}/register",
        f"tracking.store_path={tmp}/mlflow.db", f"tracking.artifact_dir={tmp}/mlartifacts")
    for stage in ("finetune", "evaluate", "register"):
        run_stage(stage, params, progress=False)
    result = json.loads((tmp / "register" / "registration.json").read_text())
    assert set(result["versions"]) == {"electra-discriminator", *(f"electra-{t}" for t in TASKS)}
    assert all("champion" in aliases for aliases in result["aliases"].values()), result["aliases"]
    return f"sqlite:///{tmp}/mlflow.db"


def _champion(registry: str, name: str):
    mlflow.set_tracking_uri(registry)
    return mlflow.pyfunc.load_model(f"models:/{name}@champion")


def _check_ner(texts: list[str], predictions: pd.DataFrame) -> None:
    assert list(predictions.columns) == ["entities"] and len(predictions) == len(texts)
    for text, entities in zip(texts, predictions["entities"], strict=True):
        assert isinstance(entities, list)
        for entity in entities:
            assert set(entity) == {"entity_group", "score", "word", "start", "end"}
            assert entity["word"] == text[entity["start"]:entity["end"]] and entity["word"]
            assert 0.0 <= entity["score"] <= 1.0
    assert predictions["entities"][1] == []            # an empty text has no entity


@pytest.mark.timeout(900)   # the module's pipeline runs in the first test that asks for it
def test_every_champion_answers_through_pyfunc(registry):
    # Discriminator: a list of strings, one row per text, a probability per word piece.
    out = _champion(registry, "electra-discriminator").predict(["the chef cooked the meal ."])
    assert list(out.columns) == ["tokens", "replaced_probability"]
    assert out["tokens"][0][0] == "[CLS]" and len(out["tokens"][0]) == len(out["replaced_probability"][0])

    # A single-sentence task: a list of strings or a `text` column; label names, not ids.
    sst2 = _champion(registry, "electra-sst2")
    out = sst2.predict(SENTENCES)
    assert list(out.columns) == ["label", "score"] and len(out) == 2
    assert set(out["label"]) <= {"negative", "positive"} and all(0.5 <= s <= 1.0 for s in out["score"])
    assert sst2.predict(pd.DataFrame({"text": SENTENCES})).equals(out)
    assert sst2.metadata.get_input_schema().input_types()[0].name == "string"

    # Pair tasks: text + text_pair in the signature; MRPC's names, STS-B a score.
    mrpc = _champion(registry, "electra-mrpc")
    assert mrpc.metadata.get_input_schema().input_names() == ["text", "text_pair"]
    out = mrpc.predict(PAIRS)
    assert set(out["label"]) <= {"not_equivalent", "equivalent"} and len(out) == 2
    assert mrpc.predict(PAIRS.to_dict("records")).equals(out)
    with pytest.raises(mlflow.exceptions.MlflowException, match="text_pair"):
        mrpc.predict(["only one sentence"])
    stsb = _champion(registry, "electra-stsb")
    assert stsb.metadata.get_input_schema().input_names() == ["text", "text_pair"]
    out = stsb.predict(PAIRS)
    assert list(out.columns) == ["score"] and all(isinstance(s, float) for s in out["score"])

    # QA: the answer is a span of its context.
    out = _champion(registry, "electra-qa").predict(QUESTIONS)
    assert out["answer"][0] in QUESTIONS["context"][0]

    # NER: the entities of each sentence, an empty list for none (the IndexError of issue 18).
    ner = _champion(registry, "electra-ner")
    _check_ner(NER_TEXTS, ner.predict(NER_TEXTS))
    _check_ner(["John lives in Paris"] + NER_TEXTS[1:], ner.predict(pd.DataFrame({"text": NER_TEXTS})))


def test_ner_aggregates_word_tags_into_entities_with_offsets(registry):
    """With the head forced to one tag, the output is known exactly: no entity at all, one entity
    per word, or one entity over the whole sentence."""
    import torch

    ner = _champion(registry, "electra-ner")
    inner = ner.unwrap_python_model()
    head = inner.model.classifier
    label2id = {label: i for i, label in inner.id2label.items()}

    def forced(tag: str) -> list[dict]:
        with torch.no_grad():
            head.weight.zero_()
            head.bias.fill_(-10.0)
            head.bias[label2id[tag]] = 10.0
        return ner.predict(["John lives in Paris."])["entities"][0]

    assert forced("O") == []
    words = forced("B-person")
    assert [(e["word"], e["start"], e["end"]) for e in words] == [
        ("John", 0, 4), ("lives", 5, 10), ("in", 11, 13), ("Paris", 14, 19), (".", 19, 20)]
    assert {e["entity_group"] for e in words} == {"person"} and all(e["score"] > 0.99 for e in words)
    whole = forced("I-location")      # conlleval: I- after O opens an entity, and continues it
    assert [(e["entity_group"], e["word"], e["start"], e["end"]) for e in whole] == [
        ("location", "John lives in Paris.", 0, 20)]


def _post(url: str, payload: dict) -> dict:
    request = urllib.request.Request(f"{url}/invocations", data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=120) as response:
        assert response.status == 200
        return json.loads(response.read())


def _records(frame: pd.DataFrame) -> list[dict]:
    """A local prediction as the scoring server writes it (JSON records)."""
    return json.loads(frame.to_json(orient="records"))


@pytest.mark.timeout(900)
def test_served_champions_answer_post_invocations(registry, tmp_path):
    """``mlflow models serve -m models:/<name>@champion --env-manager local``, five at once."""
    bin_dir = Path(sys.executable).parent
    mlflow_cli = [str(bin_dir / "mlflow")] if (bin_dir / "mlflow").exists() else [sys.executable, "-m", "mlflow"]
    # The server runs `uvicorn` from PATH: this environment's, as `make serve-model` has it.
    env = {**os.environ, "MLFLOW_TRACKING_URI": registry, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    servers: dict[str, tuple[str, subprocess.Popen]] = {}
    logs = []
    try:
        for name in REST:
            port = free_port()
            log = open(tmp_path / f"{name}.log", "w")
            logs.append(log)
            proc = subprocess.Popen(
                [*mlflow_cli, "models", "serve", "-m", f"models:/{name}@champion", "--env-manager", "local",
                 "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            servers[name] = (f"http://127.0.0.1:{port}", proc)
        for name, (url, proc) in servers.items():
            try:
                wait_http(f"{url}/ping", timeout=480, proc=proc)
            except (RuntimeError, TimeoutError) as err:
                raise AssertionError(f"{name}: {err}\n{(tmp_path / f'{name}.log').read_text()[-3000:]}") from None

        answers = {name: _post(url, REST[name])["predictions"] for name, (url, _) in servers.items()}
    finally:
        for _, proc in servers.values():
            stop_process(proc)
        for log in logs:
            log.close()

    disc = answers["electra-discriminator"]
    assert len(disc) == 1 and disc[0]["tokens"][0] == "[CLS]"
    assert len(disc[0]["tokens"]) == len(disc[0]["replaced_probability"])
    assert [set(a) for a in answers["electra-sst2"]] == [{"label", "score"}] * 2
    assert {a["label"] for a in answers["electra-sst2"]} <= {"negative", "positive"}
    assert [set(a) for a in answers["electra-stsb"]] == [{"score"}] * 2
    assert answers["electra-qa"][0]["answer"] in QUESTIONS["context"][0]
    _check_ner(NER_TEXTS, pd.DataFrame({"entities": [a["entities"] for a in answers["electra-ner"]]}))

    # Over REST, each model answers what it answers in this process.
    local_inputs = {"electra-discriminator": REST["electra-discriminator"]["inputs"], "electra-sst2": SENTENCES,
                    "electra-stsb": PAIRS, "electra-qa": QUESTIONS, "electra-ner": NER_TEXTS}
    for name, model_input in local_inputs.items():
        local = _records(_champion(registry, name).predict(model_input))
        assert _same(answers[name], local), f"{name}: served {answers[name]} but local {local}"


def _same(a, b) -> bool:
    """Equal JSON values, floats within 1e-6 (two processes may differ in the last bits)."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and abs(a - b) <= 1e-6
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b
