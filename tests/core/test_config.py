"""Params: profiles, overrides, and errors that name the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from electra.core.config import ConfigError, Params, load_params, parse_override
from tests.conftest import ROOT

PARAMS = ROOT / "params.yaml"


@pytest.mark.parametrize("profile", ["micro", "tiny", "laptop", "small", "base"])
def test_every_profile_loads(profile):
    params = load_params(PARAMS, profile=profile)
    assert params.profile == profile
    model = params.pretrain.model
    assert model.hidden_size % model.num_heads == 0


def test_small_and_base_hold_the_papers_recipes():
    small = load_params(PARAMS, profile="small")
    m = small.pretrain.model
    assert (m.num_layers, m.hidden_size, m.embedding_size, m.num_heads, m.intermediate_size) == (12, 256, 128, 4, 1024)
    assert (small.pretrain.batch_size, small.pretrain.lr, small.pretrain.max_steps) == (128, 5e-4, 1_000_000)
    assert small.tokenize.max_seq_length == 128 and m.generator_fraction == 0.25
    base = load_params(PARAMS, profile="base")
    b = base.pretrain.model
    assert (b.num_layers, b.hidden_size, b.num_heads) == (12, 768, 12)
    # The paper's 256 x 512 per optimizer step, as micro-batches that fit 80 GB (docs/memory-base.md).
    assert (base.pretrain.batch_size * base.pretrain.grad_accum_steps, base.pretrain.lr,
            base.tokenize.max_seq_length) == (256, 2e-4, 512)
    assert base.finetune.lr == 1e-4 and small.finetune.lr == 3e-4


def test_tiny_is_the_default_and_stays_small():
    params = load_params(PARAMS)
    assert params.profile == "tiny"
    assert params.pretrain.model.hidden_size <= 128 and params.pretrain.model.num_layers <= 4
    assert params.pretrain.discriminator_weight == 50.0 and params.pretrain.mask_token_prob == 0.85


def test_dotted_overrides_are_typed():
    params = load_params(PARAMS, overrides=["pretrain.lr=3e-4", "finetune.tasks=[sst2, rte]", "tokenize.max_examples=null"])
    assert params.pretrain.lr == 3e-4
    assert params.finetune.tasks == ["sst2", "rte"]
    assert params.tokenize.max_examples is None
    assert parse_override("a.b=1") == (["a", "b"], 1)


@pytest.mark.parametrize(
    ("override", "field"),
    [
        (["pretrain.lrr=1"], "pretrain.lrr"),
        (["pretrain.lr=fast"], "pretrain.lr"),
        (["pretrain.mask_prob=1.5"], "pretrain.mask_prob"),
        (["pretrain.model.generator_fraction=2"], "pretrain.model.generator_fraction"),
        (["pretrain.model.hidden_size=100", "pretrain.model.num_heads=3"], "pretrain.model"),
        (["tokenize.max_seq_length=1024"], "max_position_embeddings"),
        (["finetune.tasks=[sst2, mnli]"], "finetune.tasks"),
    ],
)
def test_bad_params_are_rejected_naming_the_field(override, field):
    with pytest.raises(ConfigError) as err:
        load_params(PARAMS, overrides=override)
    assert field in str(err.value)


def test_bad_files_and_profiles_name_the_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("pretrain: [1, 2\n")
    with pytest.raises(ConfigError, match=str(bad)):
        load_params(bad)
    with pytest.raises(ConfigError, match="unknown profile 'huge'"):
        load_params(PARAMS, profile="huge")
    with pytest.raises(ConfigError, match="not of the form"):
        load_params(PARAMS, overrides=["pretrain.lr"])


def test_params_are_frozen_and_hashable_by_section():
    params = load_params(PARAMS)
    with pytest.raises(ValidationError):
        params.pretrain.lr = 1.0
    other = load_params(PARAMS, overrides=["pretrain.lr=1e-3"])
    assert params.section_hash("pretrain") != other.section_hash("pretrain")
    assert params.section_hash("finetune") == other.section_hash("finetune")
    assert isinstance(Params().params_hash(), str)


def test_a_profile_entry_without_a_kind_tunes_a_task_and_adds_none():
    """DVC's finetune@<task> stages are params.yaml's catalog; a profile's partial entry
    (micro's qa: {max_seq_length: 128}) must not add a task the other doors would run."""
    from electra.core.config import FinetuneConfig

    tuned = FinetuneConfig(catalog={"sst2": {"kind": "glue", "data": "data/glue/SST-2"},
                                    "qa": {"max_seq_length": 256}})
    assert tuned.tasks == ["sst2"]
    chosen = FinetuneConfig(tasks=["sst2", "qa"], catalog={"qa": {"max_seq_length": 256, "doc_stride": 64}})
    assert chosen.tasks == ["sst2", "qa"] and chosen.entry("qa").max_seq_length == 256


def test_every_stage_path_derives_from_the_output_root_and_a_section_may_set_its_own(tmp_path):
    from electra.core.config import RegisterConfig, load_params

    params = load_params(ROOT / "params.yaml", overrides=[f"output_root={tmp_path}"])
    assert params.ingest.output_dir == f"{tmp_path}/ingest" and params.tokenize.input_dir == f"{tmp_path}/ingest"
    assert params.finetune.model_dir == f"{tmp_path}/pretrain/discriminator"
    assert params.register.evaluate_dir == params.evaluate.output_dir == f"{tmp_path}/evaluate"
    # A section's own path wins, and the stages after it follow it.
    moved = load_params(ROOT / "params.yaml", overrides=[f"output_root={tmp_path}", "pretrain.output_dir=/elsewhere"])
    assert moved.finetune.model_dir == "/elsewhere/discriminator" and moved.evaluate.pretrain_dir == "/elsewhere"
    # A form sends every field: paths left at their defaults still derive from the root.
    form = RegisterConfig(model_name="from-the-form").model_dump(mode="json")
    formed = load_params(ROOT / "params.yaml", overrides=[f"output_root={tmp_path}"], sections={"register": form})
    assert formed.register.model_name == "from-the-form" and formed.register.output_dir == f"{tmp_path}/register"


def test_the_catalog_schema_takes_every_kind_of_entry():
    """Prefect validates a deployment's parameters against the JSON schema before the flow
    runs: a QA or NER entry's own fields must not be refused there."""
    from electra.core.config import Params, load_params

    schema = Params.model_json_schema()["$defs"]["FinetuneConfig"]["properties"]["catalog"]
    assert schema["additionalProperties"] == {"type": "object"}
    params = load_params(ROOT / "params.yaml")
    assert Params.model_validate(params.model_dump(mode="json")) == params
