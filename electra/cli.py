"""The command-line door: ``electra <stage>`` for each stage and ``electra run`` for all.

Every command takes ``--profile`` and dotted overrides (``-S pretrain.lr=3e-4``)
and calls the same library functions as the DVC stages and the Prefect flow.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Annotated

import typer

from electra.core.config import ConfigError, Params, load_params, load_resolved
from electra.pipeline.table import PIPELINE, TABLE, Stage, stage_name

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="ELECTRA pipeline: ingest, tokenize, pretrain, finetune, evaluate, register.",
)


def _version(value: bool) -> None:
    if value:
        from electra import __version__

        typer.echo(f"electra-pipeline {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    log_level: Annotated[str, typer.Option(
        "--log-level", help="DEBUG, INFO, WARNING or ERROR: the pipeline's own messages (others: WARNING).",
        case_sensitive=False)] = "INFO",
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """ELECTRA pipeline: ingest, tokenize, pretrain, finetune, evaluate, register."""
    from electra.core.logs import setup_logging

    try:
        setup_logging(log_level)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--log-level") from None

ProfileOpt = Annotated[str | None, typer.Option("--profile", "-p", help="Profile overlay: micro, tiny, laptop, small, base.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-S", help="Override a param, e.g. -S pretrain.lr=3e-4 (repeatable).")]
ParamsOpt = Annotated[str, typer.Option("--params", help="The params file.")]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bars on long loops.")]
ResolvedOpt = Annotated[str | None, typer.Option("--resolved", help="A resolved params snapshot (no profile, no overrides).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout (it is also in the "
                                                      "stage's run.json).")]


def _defaults_for_embedded_services(progress: bool = True) -> None:
    """Keep caches and telemetry inside the project unless the user says otherwise; without
    progress bars (--no-progress, or no terminal), the libraries' own bars go too ("Loading
    weights", "Writing model shards"): in a log file each is a line of carriage returns."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    if not (progress and sys.stderr.isatty()):
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _load(params_file: str, profile: str | None, overrides: list[str] | None) -> Params:
    try:
        return load_params(params_file, profile=profile, overrides=overrides or [])
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None


def _run_one(stage: str, params_file: str, profile: str | None, overrides: list[str] | None, progress: bool,
             resolved: str | None = None, task: str | None = None, as_json: bool = False) -> None:
    from electra.pipeline.stages import run_stage
    from electra.pipeline.summary import stage_line

    _defaults_for_embedded_services(progress)
    if resolved:
        try:
            params = load_resolved(resolved)
        except ConfigError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=2) from None
    else:
        params = _load(params_file, profile, overrides)
    try:
        # stdout carries the JSON result only; libraries' chatter goes to stderr.
        with contextlib.redirect_stdout(sys.stderr):
            result = run_stage(stage, params, progress=progress, task=task)
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {stage_name(stage, task)}: {exc}", err=True)
        raise typer.Exit(code=1) from None
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
    else:
        typer.echo(stage_line(stage, result, task), err=True)


TaskOpt = Annotated[str | None, typer.Option(
    "--task", "-t", help="Only this task of finetune.tasks (the stage's run is named <stage>@<task>).")]


def _make_stage_command(stage: Stage):
    """``electra <stage>``: the options every stage takes, and ``--task`` where it runs per task."""
    if stage.per_task:
        def command(
            profile: ProfileOpt = None,
            set_: SetOpt = None,
            params: ParamsOpt = "params.yaml",
            progress: ProgressOpt = True,
            resolved: ResolvedOpt = None,
            task: TaskOpt = None,
            as_json: JsonOpt = False,
        ) -> None:
            _run_one(stage.name, params, profile, set_, progress, resolved, task, as_json)
    else:
        def command(
            profile: ProfileOpt = None,
            set_: SetOpt = None,
            params: ParamsOpt = "params.yaml",
            progress: ProgressOpt = True,
            resolved: ResolvedOpt = None,
            as_json: JsonOpt = False,
        ) -> None:
            _run_one(stage.name, params, profile, set_, progress, resolved, None, as_json)

    command.__doc__ = stage.doc
    command.__name__ = stage.name
    return command


for _stage in TABLE.values():
    app.command(name=_stage.name, help=_stage.doc)(_make_stage_command(_stage))


@app.command("run")
def run_all(
    profile: ProfileOpt = None,
    set_: SetOpt = None,
    params: ParamsOpt = "params.yaml",
    progress: ProgressOpt = True,
    stages: Annotated[str | None, typer.Option(help="Comma-separated subset of stages, in order.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Run every stage, even one whose inputs, params and "
                                                        "code are those of its last run.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run the whole pipeline (or --stages) in this process, under one parent MLflow run.

    A stage whose params, code and inputs are unchanged since its last run (by any door)
    and whose outputs are untouched is skipped, as `dvc repro` would; --force runs it.
    Ends with the summary table (`electra summary`).
    """
    from electra.pipeline.stages import run_pipeline
    from electra.pipeline.summary import stage_line, summary_text

    _defaults_for_embedded_services(progress)
    cfg = _load(params, profile, set_)
    chosen = [s.strip() for s in stages.split(",")] if stages else list(PIPELINE)
    unknown = [s for s in chosen if s not in TABLE]
    if unknown:
        typer.echo(f"error: unknown stages {unknown}; stages are {', '.join(TABLE)}", err=True)
        raise typer.Exit(code=2)

    def report(stage: str, result: dict) -> None:
        typer.echo(stage_line(stage, result), err=True)

    try:
        with contextlib.redirect_stdout(sys.stderr):
            results = run_pipeline(cfg, chosen, progress=progress, on_stage=report, skip_unchanged=not force)
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    if as_json:
        typer.echo(json.dumps(results, indent=2, default=str))
    else:
        typer.echo(summary_text(cfg))


@app.command("summary")
def summary_command(profile: ProfileOpt = None, set_: SetOpt = None, params: ParamsOpt = "params.yaml") -> None:
    """The pipeline's headline results from its outputs: GLUE, QA/NER and bias with intervals,
    the registered versions and their aliases, and how to open the registry UI."""
    from electra.pipeline.summary import summary_text

    typer.echo(summary_text(_load(params, profile, set_)))


def _registry(params_file: str, profile: str | None, overrides: list[str] | None) -> None:
    """Point MLflow at the tracking store the params name (env var, params, embedded sqlite)."""
    from electra.core.tracking import configure

    _defaults_for_embedded_services()
    configure(_load(params_file, profile, overrides).tracking)


def _report_registry_action(what: str, action, *args) -> None:
    """Run a registry action; print its JSON result, or its error (exit 1) without a traceback."""
    try:
        result = action(*args)
    except Exception as exc:  # MLflow's errors (unknown model or version) are reported, not traced
        typer.echo(f"error: {what}: {exc}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(json.dumps(result, indent=2))


@app.command("promote")
def promote_command(
    model: Annotated[str, typer.Option("--model", help="Registered model name, e.g. electra-sst2.")],
    version: Annotated[int, typer.Option("--version", help="The version to make champion.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded as a tag on the version).")],
    profile: ProfileOpt = None,
    set_: SetOpt = None,
    params: ParamsOpt = "params.yaml",
) -> None:
    """Move the `champion` alias to a version by hand; the reason, time and user are recorded."""
    from electra.registry.register import promote

    _registry(params, profile, set_)
    _report_registry_action(f"promote {model} version {version}", promote, model, version, reason)


@app.command("rollback")
def rollback_command(
    model: Annotated[str, typer.Option("--model", help="Registered model name, e.g. electra-sst2.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded as a tag).")] = "rollback",
    profile: ProfileOpt = None,
    set_: SetOpt = None,
    params: ParamsOpt = "params.yaml",
) -> None:
    """Move `champion` back to the version that held it before the current one."""
    from electra.registry.register import rollback

    _registry(params, profile, set_)
    _report_registry_action(f"rollback {model}", rollback, model, reason)


@app.command("params")
def show_params(profile: ProfileOpt = None, set_: SetOpt = None, params: ParamsOpt = "params.yaml") -> None:
    """Print the effective params (params.yaml + profile + overrides) as YAML."""
    import yaml

    cfg = _load(params, profile, set_)
    typer.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
