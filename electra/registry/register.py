"""Stage ``register``: log the models to MLflow, register versions, gate, set aliases.

The discriminator becomes a version of ``register.model_name`` (a pyfunc that
returns per-token replaced-token probabilities), each fine-tuned model a
version of ``<task_model_prefix><task>``: GLUE tasks answer label names (or the
STS-B score) for a ``text`` (and ``text_pair``), QA the answer span, NER the
entities of each sentence. All are pyfunc models logged as code
(``electra/registry/serving/``, :mod:`electra.registry.pyfunc`), so they load and serve the
same way (``mlflow models serve``). Every version carries its lineage as tags and gets the
alias ``challenger``; ``champion`` moves to it only when every gate in
``params.yaml`` passes. Moving the alias is the last step, so a crash never
leaves a half-promoted model.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc

from electra.core.config import Params
from electra.core.files import read_json, write_json, write_text
from electra.core.tracking import flatten, git_info, redact_uri
from electra.evaluation.evaluate import headline_metrics
from electra.evaluation.report import gain_text
from electra.evaluation.results import EEC_TASK
from electra.registry.flavours import label_names, log_discriminator, log_task_model, pip_requirements, public_version
from electra.registry.gate import Check, Evidence, evaluate_gate, gate_report_markdown, summary_line, task_metric_key
from electra.registry.lineage import content_digest, data_pointer_hash, dataset_records, dvc_lock_hashes, log_datasets
from electra.tasks.base import task_for

# What other modules and tests reach through this one (the stage's public names, and the
# logging and lineage helpers that moved to flavours.py and lineage.py).
__all__ = ["CHALLENGER", "CHAMPION", "content_digest", "data_pointer_hash", "dataset_records", "dvc_lock_hashes",
           "label_names", "pip_requirements", "promote", "promotion_lock_path", "public_version", "register",
           "rollback"]

def _lineage(params: Params, run_id: str, pretrain_result: dict) -> dict[str, str]:
    cfg = params.register
    stage_runs = {}
    for stage, folder in (("pretrain", cfg.pretrain_dir), ("finetune", cfg.finetune_dir),
                          ("evaluate", cfg.evaluate_dir)):
        run_file = Path(folder) / "run.json"
        # "unknown": the stage ran outside the doors (a library call), so no MLflow run.
        stage_runs[f"{stage}_run_id"] = read_json(run_file)["mlflow_run_id"] if run_file.exists() else "unknown"
        if stage == "finetune" and not run_file.exists():
            # Fanned out (finetune@<task>): one MLflow run per task.
            per_task = {task: read_json(f)["mlflow_run_id"] for task in params.finetune.tasks
                        if (f := Path(folder) / task / "run.json").is_file()}
            if per_task:
                stage_runs["finetune_run_id"] = ",".join(f"{t}:{r}" for t, r in per_task.items())
    lineage = {
        **git_info(),
        "data_dvc_md5": data_pointer_hash(),
        "params_hash": params.params_hash(),
        "profile": params.profile,
        "register_run_id": run_id,
        **stage_runs,
        "discriminator_sha256": pretrain_result["hashes"]["discriminator"],
        "tokenize_hash": str(pretrain_result.get("tokenize_hash")),
        "objective": pretrain_result.get("objective", "electra"),
        **{f"{name}_version": _package_version(name) for name in _LINEAGE_PACKAGES},
    }
    flow_run = os.environ.get("PREFECT__FLOW_RUN_ID")
    if flow_run:
        lineage["prefect_flow_run_id"] = flow_run
    for key, digest in dvc_lock_hashes().items():
        lineage[f"dvc_lock.{key}"] = digest
    return {k: str(v) for k, v in lineage.items()}


_LINEAGE_PACKAGES = ("electra-pipeline", "torch", "transformers", "tokenizers", "mlflow", "python")


# --- aliases: champion moves last, under a lock, only if nobody moved it meanwhile -------------

CHAMPION, CHALLENGER = "champion", "challenger"
HISTORY_TAG = "champion.history"      # registered-model tag: JSON list of promotions, oldest first


def _alias_version(client, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


LOCK_SUFFIX = ".promotion-lock"   # registered model that exists while a pipeline moves champion
LOCK_STALE_S = 120.0               # a move is a handful of API calls: older locks belong to dead holders
LOCK_WAIT_S = 600.0


def promotion_lock_path(tracking_uri: str) -> Path | None:
    """The file lock guarding champion moves on an embedded sqlite store, beside the database
    (``mlflow.db`` -> ``mlflow.db.promote.lock``); None for a tracking server (which locks
    with a registered model instead)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri.removeprefix("sqlite:///") + ".promote.lock")


@contextlib.contextmanager
def _promotion_lock(client, name: str) -> Iterator[None]:
    """Serialise champion moves of ``name`` across pipelines sharing a registry.

    On an embedded sqlite store it is a file lock next to the database. On a tracking
    server it is the registered model ``<name>.promotion-lock``: the registry's unique
    model name makes creating it an atomic test-and-set on the server's database, so two
    pipelines on different machines cannot both hold it. A holder that died keeps it
    until it is ``LOCK_STALE_S`` old; the next pipeline then breaks it
    (:func:`_break_stale_lock`).
    """
    lock_path = promotion_lock_path(mlflow.get_tracking_uri())
    if lock_path is not None:
        import fcntl

        with open(lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    import random
    import socket
    import uuid

    from mlflow.exceptions import MlflowException

    lock = f"{name}{LOCK_SUFFIX}"
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + LOCK_WAIT_S
    delay = 0.05
    while True:
        try:
            client.create_registered_model(
                lock, tags={"owner": owner, "since": f"{time.time():.3f}"},
                description=f"Held while a pipeline moves the champion alias of {name}. "
                            f"Safe to delete when older than {LOCK_STALE_S:.0f} s.")
            break
        except MlflowException as err:
            # RESOURCE_DOES_NOT_EXIST: the server's create met the holder's lock, then read
            # it back to word its error after the holder had released it (MLflow's
            # sqlalchemy store does that). The lock is free: try again after the pause.
            if err.error_code not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                raise
            released = err.error_code == "RESOURCE_DOES_NOT_EXIST"
        if not released:
            with contextlib.suppress(MlflowException):   # released meanwhile: just try again
                held = client.get_registered_model(lock).tags or {}
                if time.time() - float(held.get("since", "0")) > LOCK_STALE_S:
                    _break_stale_lock(client, lock, held)
                    continue
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name}: the promotion lock {lock!r} has been held for over {LOCK_WAIT_S:.0f} s")
        time.sleep(delay * (1 + random.random()))
        delay = min(delay * 2, 1.0)
    _sweep_tombstones(client, lock)
    try:
        yield
    finally:
        with contextlib.suppress(MlflowException):
            if (client.get_registered_model(lock).tags or {}).get("owner") == owner:
                client.delete_registered_model(lock)


def _tombstone(lock: str, held: dict[str, str]) -> str:
    """The name a stale lock is renamed to when broken: one per lock instance (owner, time)."""
    digest = hashlib.sha256(f"{held.get('owner', '')}@{held.get('since', '')}".encode()).hexdigest()[:12]
    return f"{lock}.stale-{digest}"


def _break_stale_lock(client, lock: str, held: dict[str, str]) -> bool:
    """Break the lock instance whose tags were read as ``held``, and no other.

    A delete by name would race: two pipelines read the same stale lock, one deletes it
    and takes a fresh lock, then the other's delete removes that fresh lock and both hold
    it. A rename to a name derived from the stale instance cannot: the second rename
    targets the same name, which the first already holds, so the server refuses it
    (``RESOURCE_ALREADY_EXISTS``) whichever lock is under ``lock`` by then. The
    tombstone stays ``LOCK_STALE_S`` so that a late breaker still meets it.
    Returns whether this call broke it.
    """
    from mlflow.exceptions import MlflowException

    try:
        client.rename_registered_model(lock, _tombstone(lock, held))
    except MlflowException as err:
        if err.error_code in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
            return False      # broken by another pipeline, or released meanwhile
        raise
    return True


def _sweep_tombstones(client, lock: str) -> None:
    """Delete the tombstones of broken locks once no late breaker can meet them."""
    from mlflow.exceptions import MlflowException

    if "'" in lock:           # not expressible in a search filter; tombstones stay
        return
    prefix = f"{lock}.stale-"
    with contextlib.suppress(MlflowException):
        for model in client.search_registered_models(f"name LIKE '{prefix}%'"):
            age_s = time.time() - (model.last_updated_timestamp or 0) / 1000.0
            if model.name.startswith(prefix) and age_s > LOCK_STALE_S:
                with contextlib.suppress(MlflowException):
                    client.delete_registered_model(model.name)


def _history(client, name: str) -> list[dict[str, str]]:
    tags = client.get_registered_model(name).tags or {}
    try:
        return list(json.loads(tags.get(HISTORY_TAG, "[]")))
    except json.JSONDecodeError:
        return []


def _move_champion(client, name: str, version: str, expected: str | None, reason: str, action: str) -> bool:
    """Point ``champion`` at ``version`` if it still points at ``expected``; record why.

    The check and the move happen under :func:`_promotion_lock`, so they are atomic per
    model: of several pipelines that compared against the same champion, one moves it.
    """
    with _promotion_lock(client, name):
        if _alias_version(client, name, CHAMPION) != expected:
            return False
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        who = _user()
        client.set_model_version_tag(name, version, f"{action}.reason", reason[:5000])
        client.set_model_version_tag(name, version, f"{action}.at", when)
        client.set_model_version_tag(name, version, f"{action}.by", who)
        history = _history(client, name)
        history.append({"version": version, "action": action, "at": when, "reason": reason[:200]})
        # A registered-model tag holds at most 5000 characters: keep the recent promotions.
        while len(json.dumps(history)) > 4500:
            history.pop(0)
        client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
        client.set_registered_model_alias(name, CHAMPION, version)
        return True


def _user() -> str:
    """Who moved the alias: the OS user (containers often have no $USER)."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def promote(name: str, version: str | int, reason: str) -> dict[str, Any]:
    """Move ``champion`` of ``name`` to ``version`` by hand (the reason is recorded as a tag).

    The tracking URI must be configured (``electra.core.tracking.configure``).
    """
    from mlflow import MlflowClient

    if not reason.strip():
        raise ValueError("promote: give a reason (it is recorded on the version)")
    client = MlflowClient()
    version = str(version)
    client.get_model_version(name, version)   # fails clearly when the version does not exist
    previous = _alias_version(client, name, CHAMPION)
    if not _move_champion(client, name, version, previous, reason, "promoted"):
        raise RuntimeError(f"{name}: champion moved while promoting; try again")
    return {"model": name, "champion": version, "previous": previous, "reason": reason}


def rollback(name: str, reason: str = "rollback") -> dict[str, Any]:
    """Move ``champion`` of ``name`` back to the version that held it before the current one."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    current = _alias_version(client, name, CHAMPION)
    if current is None:
        raise ValueError(f"{name}: no champion to roll back")
    # Walk back past the current champion's own entries to the version before it.
    for entry in reversed(_history(client, name)):
        candidate = entry["version"]
        if candidate == current:
            continue
        try:
            client.get_model_version(name, candidate)
        except MlflowException:
            continue          # deleted since: look further back
        if not _move_champion(client, name, candidate, current, f"{reason} (from version {current})",
                              "rolled_back_to"):
            raise RuntimeError(f"{name}: champion moved while rolling back; try again")
        client.set_model_version_tag(name, current, "rolled_back.reason", reason[:5000])
        return {"model": name, "champion": candidate, "previous": current, "reason": reason}
    raise ValueError(f"{name}: no earlier champion recorded to roll back to")


# --- the stage -----------------------------------------------------------------------------

EVIDENCE_PATH = "evidence"   # in the register run: metrics.json and predictions/<task>.jsonl


def _log_evidence(evidence: Evidence) -> None:
    """What later gates compare against: this run's metrics and per-example predictions."""
    mlflow.log_dict(evidence.metrics, f"{EVIDENCE_PATH}/metrics.json")
    for task, path in evidence.predictions.items():
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / f"{task}.jsonl"
            shutil.copyfile(path, copy)
            mlflow.log_artifact(str(copy), f"{EVIDENCE_PATH}/predictions")


def _champion_evidence(client, name: str, version: str, cache: dict[str, Evidence | None],
                       workdir: Path) -> Evidence | None:
    """The evidence the champion version was gated on, from its registration run (None if absent)."""
    run_id = client.get_model_version(name, version).tags.get("gate.evidence_run_id")
    if not run_id:
        return None
    if run_id not in cache:
        from mlflow.exceptions import MlflowException

        target = workdir / run_id
        try:
            folder = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=EVIDENCE_PATH,
                                                         dst_path=str(target))
            cache[run_id] = Evidence.from_folder(folder)
        except (MlflowException, OSError):
            cache[run_id] = None
    return cache[run_id]


def _gate_one(client, name: str, version: str, scope: dict, evidence: Evidence, params: Params,
              cache: dict, workdir: Path) -> dict[str, Any]:
    """Gate one new version against the current champion of its model."""
    champion = _alias_version(client, name, CHAMPION)
    champion_evidence = None
    checks: list[Check]
    if champion is not None and champion != version:
        champion_evidence = _champion_evidence(client, name, champion, cache, workdir)
    checks = evaluate_gate(evidence, champion_evidence, params.register.gate,
                           tasks=scope["tasks"], bias_prefixes=scope["bias"])
    if champion is not None and champion_evidence is None:
        checks.append(Check("champion_evidence", "non_inferiority", "-", None, "champion evidence", False,
                            f"champion version {champion} has no saved gate evidence to compare with; "
                            "promote by hand (electra promote) if intended"))
    passed = all(c.passed for c in checks)
    if not passed:
        outcome = CHALLENGER
    elif params.register.require_approval:
        outcome = "awaiting approval"
    else:
        outcome = CHAMPION
    return {"version": version, "passed": passed, "outcome": outcome, "compared_to": champion,
            "checks": [c.as_dict() for c in checks],
            "reasons": [summary_line(c) for c in checks if not c.passed]}


def _gate_tags(gate: dict[str, Any]) -> dict[str, str]:
    tags = {
        "gate.passed": str(gate["passed"]).lower(),
        "gate.outcome": gate["outcome"],
        "gate.compared_to": gate["compared_to"] or "none",
        "gate.reasons": "; ".join(gate["reasons"]) or "none",
    }
    for c in gate["checks"]:
        tags[f"gate.check.{c['name']}"] = summary_line(Check(**c))
    return tags


def _write_card(name: str, version: str, scope: dict, metrics: dict, gate: dict, lineage: dict, params: Params,
                datasets: list[dict], out_dir: Path) -> Path:
    """Render, write and log MODEL_CARD.md for one version; returns its path."""
    from electra.registry.model_card import render_model_card

    licenses = Path(params.register.licenses_file)
    card = render_model_card(
        model_name=name, version=version, kind=scope["kind"], task=scope["task"], metrics=metrics, gate=gate,
        lineage=lineage, params=params.model_dump(mode="json"),
        licenses_md=licenses.read_text(encoding="utf-8") if licenses.is_file() else None, datasets=datasets)
    path = out_dir / "model_cards" / name / "MODEL_CARD.md"
    write_text(path, card)
    mlflow.log_artifact(str(path), f"model_cards/{name}")
    return path


def _log_models(params: Params) -> tuple[dict[str, str], dict[str, dict]]:
    """Log and register every model: the discriminator, then each fine-tuned task's first seed.

    Returns the new versions by registered name, and each one's scope: what it is gated and
    described on (its kind and task, the tasks and bias scores that are its own).
    """
    cfg = params.register
    info = log_discriminator(Path(cfg.pretrain_dir), cfg.model_name)
    versions = {cfg.model_name: str(info.registered_model_version)}
    scopes = {cfg.model_name: {"kind": "discriminator", "task": None, "tasks": None, "bias": ("bias.",),
                               "metric_prefix": ""}}
    if not cfg.register_finetuned:
        return versions, scopes
    for task in params.finetune.tasks:
        path = Path(cfg.finetune_dir) / task / "result.json"
        summary = read_json(path) if path.is_file() else {"skipped": "not fine-tuned"}
        if "skipped" in summary:
            continue
        impl = task_for(params.finetune, task)
        name = f"{cfg.task_model_prefix}{task}"
        versions[name] = str(log_task_model(impl, summary, name).registered_model_version)
        # The EEC measures one task's model: its bias scores are that model's own.
        scopes[name] = {"kind": impl.kind, "task": task, "tasks": [task],
                        "bias": ("bias.eec.",) if task == EEC_TASK else (),
                        "metric_prefix": f"{task_metric_key(task)}."}
    return versions, scopes


def _move_aliases(client, versions: dict[str, str], gates: dict[str, dict], regate) -> None:
    """``challenger`` on every new version; ``champion`` on those that passed, only if it still
    points where the gate compared: if another pipeline promoted meanwhile, gate again
    (``regate(name)``) against the new champion, at most three times."""
    for name, version in versions.items():
        client.set_registered_model_alias(name, CHALLENGER, version)
        for _attempt in range(3):
            gate = gates[name]
            if gate["outcome"] != CHAMPION:
                break
            if _move_champion(client, name, version, gate["compared_to"],
                              f"passed the gate against version {gate['compared_to'] or 'none'}", "promoted"):
                break
            gates[name] = regate(name)
        else:
            gates[name]["outcome"] = CHALLENGER
            gates[name]["reasons"].append("the champion kept moving under concurrent promotions")
            client.set_model_version_tag(name, version, "gate.outcome", CHALLENGER)


def register(params: Params, progress: bool = True) -> dict:
    """Log and register the models, gate each new version against its champion, then move aliases.

    Must run inside an active MLflow run (``electra.pipeline.stages.run_stage`` opens it).
    Every new version gets tags (lineage, metrics, each gate check), a model card
    and the alias ``challenger``; those that pass the gate become ``champion``
    (unless ``register.require_approval``: then they wait for :func:`promote`).
    The alias moves are the last step. Writes ``registration.json``,
    ``gate_report.md`` and ``model_cards/<name>/MODEL_CARD.md`` under ``output_dir``.
    """
    from mlflow import MlflowClient

    cfg = params.register
    started = time.time()
    out_dir = Path(cfg.output_dir)
    pretrain_result = read_json(Path(cfg.pretrain_dir) / "result.json")
    evidence = Evidence.from_evaluate_dir(cfg.evaluate_dir)
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("register must run inside an MLflow run (use electra.pipeline.stages.run_stage)")
    client = MlflowClient()

    # 1. What every version carries: lineage, datasets, the evidence later gates compare with.
    lineage = _lineage(params, run.info.run_id, pretrain_result)
    mlflow.set_tags({f"lineage.{k}": v for k, v in lineage.items()})
    datasets = dataset_records(params)
    log_datasets(datasets, lineage["data_dvc_md5"])
    _log_evidence(evidence)
    flat_metrics = {k: float(v) for k, v in flatten("", headline_metrics(evidence.metrics)).items()
                    if isinstance(v, int | float) and not isinstance(v, bool)}
    mlflow.log_metrics({k: v for k, v in flat_metrics.items() if len(k) < 250})

    # 2. Log and register every model.
    versions, scopes = _log_models(params)

    # 3. Gate, tag and describe each version: nothing moves yet. 4. Aliases last.
    cache: dict[str, Evidence | None] = {}
    with tempfile.TemporaryDirectory(prefix="electra-gate-") as tmp:
        def regate(name: str) -> dict[str, Any]:
            return _tag_and_describe(client, name, versions[name], scopes[name], evidence, params, cache,
                                     Path(tmp), lineage, flat_metrics, datasets, out_dir, run.info.run_id)

        gates = {name: regate(name) for name in versions}
        _move_aliases(client, versions, gates, regate)
    cards = {name: str(out_dir / "model_cards" / name / "MODEL_CARD.md") for name in versions}

    aliases = {name: [a for a in (CHALLENGER, CHAMPION) if _alias_version(client, name, a) == version]
               for name, version in versions.items()}
    write_text(out_dir / "gate_report.md", gate_report_markdown(
        {name: {**gate, "version": versions[name]} for name, gate in gates.items()}))
    mlflow.log_artifact(str(out_dir / "gate_report.md"))
    report = {"stage": "register", "versions": versions, "aliases": aliases, "gates": gates, "lineage": lineage,
              "datasets": datasets, "model_cards": cards, "seconds": round(time.time() - started, 3),
              "tracking_uri": redact_uri(mlflow.get_tracking_uri())}
    write_json(out_dir / "registration.json", report)
    mlflow.log_dict(report, "registration.json")
    return {
        "model_name": cfg.model_name,
        "version": versions[cfg.model_name],
        "versions": versions,
        "outcomes": {name: gate["outcome"] for name, gate in gates.items()},
        "pending_approval": {name: versions[name] for name, gate in gates.items()
                             if gate["outcome"] == "awaiting approval"},
        "champion": CHAMPION in aliases[cfg.model_name],
        "gate_passed": gates[cfg.model_name]["passed"],
        "gate_report": str(out_dir / "gate_report.md"),
        "model_cards": cards,
        "output_dir": cfg.output_dir,
    }


def _tag_and_describe(client, name: str, version: str, scope: dict, evidence: Evidence, params: Params,
                      cache: dict, workdir: Path, lineage: dict, flat_metrics: dict, datasets: list[dict],
                      out_dir: Path, run_id: str) -> dict[str, Any]:
    """Gate one version, then write its tags, model card and description (no alias moves)."""
    gate = _gate_one(client, name, version, scope, evidence, params, cache, workdir)
    prefix = scope["metric_prefix"]
    own_metrics = {k: v for k, v in flat_metrics.items()
                   if k.startswith(prefix) or any(k.startswith(b) for b in scope["bias"])}
    tags = {**lineage, **_gate_tags(gate), "gate.evidence_run_id": run_id,
            **{f"metric.{k}": v for k, v in own_metrics.items()}, **_scratch_tags(evidence.metrics, prefix)}
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value)[:5000])
    _write_card(name, version, scope, evidence.metrics, gate, lineage, params, datasets, out_dir)
    card_path = f"model_cards/{name}/MODEL_CARD.md"
    client.set_model_version_tag(name, version, "model_card", f"runs:/{run_id}/{card_path}")
    # The registry UI shows the description: the summary, headline results and gate outcome,
    # then a link to the whole card (with its front matter), an artifact of the run.
    client.update_model_version(name, version, description=_description(
        name, version, scope, evidence.metrics, gate, lineage, params, run_id, card_path))
    return gate


def _scratch_tags(metrics: dict[str, Any], prefix: str) -> dict[str, str]:
    """``gain_over_scratch``: the discriminator's verdict on the scratch control (every task and
    the GLUE mean), or a task model's own gain in points with its interval; none without one."""
    if not prefix:
        summary = metrics.get("gain_over_scratch") or {}
        return {"gain_over_scratch": summary["verdict"]} if summary.get("verdict") else {}
    section = flatten("", metrics)
    key = prefix.rstrip(".")
    if not isinstance(section.get(f"{key}.gain_over_scratch"), int | float):
        return {}
    return {"gain_over_scratch": gain_text(section[f"{key}.gain_over_scratch"],
                                           section.get(f"{key}.gain_over_scratch_ci")) + " points"}


DESCRIPTION_LIMIT = 4900     # characters; MLflow stores descriptions of up to 5000


def _description(name: str, version: str, scope: dict, metrics: dict, gate: dict, lineage: dict,
                 params: Params, run_id: str, card_path: str) -> str:
    """The version's registry description (:func:`electra.registry.model_card.render_description`), with
    a link the UI opens: the card in the run's artifacts (``#/experiments/<id>/runs/<run>/...``)."""
    from electra.registry.model_card import render_description

    run = mlflow.active_run()
    experiment_id = run.info.experiment_id if run is not None and run.info.run_id == run_id else (
        mlflow.get_run(run_id).info.experiment_id)
    text = render_description(
        model_name=name, version=version, kind=scope["kind"], task=scope["task"], metrics=metrics, gate=gate,
        lineage=lineage, params=params.model_dump(mode="json"),
        card_link=f"#/experiments/{experiment_id}/runs/{run_id}/artifacts/{card_path}",
        card_uri=f"runs:/{run_id}/{card_path}")
    if len(text) > DESCRIPTION_LIMIT:
        # Keep the link (the last paragraph): cut the lines above it.
        head, _, link = text.rstrip("\n").rpartition("\n\n")
        text = head[:DESCRIPTION_LIMIT - len(link) - 8].rstrip() + "\n…\n\n" + link + "\n"
    return text


def _package_version(name: str) -> str:
    """The installed version of ``name``, or "source" when it runs from a checkout uninstalled."""
    if name == "python":
        return platform.python_version()
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "source"
