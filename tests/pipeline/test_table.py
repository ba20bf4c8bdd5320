"""dvc.yaml (written by hand, for people) agrees with the Stage table (what the other doors
and the skip fingerprints are built from): the same stages, params sections, code, inputs
and outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from electra.core.config import load_params
from electra.pipeline.table import PIPELINE, TABLE
from tests.conftest import ROOT


def _dvc_stages() -> dict[str, dict]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    stages.update(yaml.safe_load((ROOT / "compare" / "dvc.yaml").read_text())["stages"])
    return stages


def _under(path: str, folder: str) -> bool:
    return Path(path) == Path(folder) or Path(folder) in Path(path).parents


def _paths(entries: list) -> list[str]:
    """dvc.yaml dep/out entries as paths (an entry is a string or a one-key mapping)."""
    return [e if isinstance(e, str) else next(iter(e)) for e in entries]


def _expand(entries: list, task: str | None, params=None) -> list[str]:
    """A foreach stage's entries for one task: over finetune.catalog, ${key} is the task's
    name and ${item.data} its entry's data."""
    if not task:
        return _paths(entries)
    data = params.finetune.entry(task).data
    return [p.replace("${key}", task).replace("${item.data}", data) for p in _paths(entries)]


def _cases():
    for name in TABLE:
        yield name


def test_dvc_yaml_has_the_pipeline_stages_in_the_table_order():
    assert tuple(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]) == PIPELINE
    assert set(_dvc_stages()) == set(TABLE)


@pytest.mark.parametrize("name", list(_cases()))
def test_dvc_stage_agrees_with_the_table(name):
    params = load_params(ROOT / "params.yaml")
    stage, entry = TABLE[name], _dvc_stages()[name]
    body = entry.get("do", entry)   # a foreach stage keeps its body under `do`
    task = params.finetune.tasks[0] if "foreach" in entry else None
    assert stage.per_task or "foreach" not in entry
    if "foreach" in entry:   # one stage per catalog entry: the catalog is the task list
        assert entry["foreach"] == "${finetune.catalog}"
        assert list(params.finetune.tasks) == list(params.finetune.catalog)

    # 1. The command is the CLI door, per task where the stage runs per task.
    assert body["cmd"].split()[:2] == ["electra", name]
    assert ("--task ${key}" in body["cmd"]) == ("foreach" in entry)

    # 2. Params: the profile and output root, the stage's sections, in params.yaml and the overlay.
    plain = [p for p in body["params"] if isinstance(p, str)]
    overlay = next(p for p in body["params"] if isinstance(p, dict))
    assert plain == ["profile", "output_root", *stage.sections], plain
    assert overlay == {"profiles/${profile}.yaml": list(stage.sections)}

    # 3. Code: exactly the table's modules and packages.
    deps = _expand(body["deps"], task, params)
    assert sorted(d for d in deps if d.startswith("electra/")) == sorted(stage.code_paths())
    for code in stage.code_paths():
        assert (ROOT / code).exists(), f"{name}: {code} does not exist"

    # 4. Inputs: every input the fingerprint hashes, under any profile (laptop adds the GLUE
    #    train text to ingest), lies under a dependency, and every dependency holds something
    #    the stage reads under some profile.
    data = [d for d in deps if not d.startswith("electra/")]
    profiles = sorted(p.stem for p in (ROOT / "profiles").glob("*.yaml"))
    inputs = sorted({path for profile in profiles
                     for path in stage.inputs(load_params(ROOT / "params.yaml", profile=profile), task)})
    for path in inputs:
        assert any(_under(path, d) for d in data), f"{name}: input {path} is no dvc.yaml dependency ({data})"
    for dep in data:
        assert any(_under(path, dep) or _under(dep, path) for path in inputs), f"{name}: {dep} is not read"

    # 5. Outputs: every out lies in a folder the stage writes, and each such folder has outs.
    outs = _expand(body.get("outs", []) + body.get("metrics", []), task, params)
    folders = [str(f) for f in stage.outputs(params, task)]
    for out in outs:
        assert any(_under(out, f) for f in folders), f"{name}: out {out} is outside {folders}"
    for folder in folders:
        assert any(_under(out, folder) for out in outs), f"{name}: nothing under {folder} is a dvc.yaml out"


# Modules whose edits do not change what a stage makes: how params are read, files written
# atomically, keys hashed, runs tracked.
INFRASTRUCTURE = {"core/config.py", "core/paths.py", "core/task_entries.py", "core/files.py", "core/keys.py", "core/tracking.py"}


def _entry_modules(stage) -> set[str]:
    """The electra modules the stage's runner imports (its lazy imports)."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(stage.run)))
    return {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}


@pytest.mark.parametrize("name", list(_cases()))
def test_the_table_lists_all_the_code_a_stage_runs(name):
    """Every electra module a stage's code imports, directly or not, is among its code (the
    fingerprint and dvc.yaml's deps), so an edit anywhere in it reruns the stage."""
    from tests.project.test_architecture import _imports, _modules

    modules = _modules()
    known = set(modules)
    stage = TABLE[name]
    seen: set[str] = set()
    todo = [m for m in _entry_modules(stage) if m in known]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo += [t for t in _imports(modules[module], known) if t in known]
    listed = [f"electra/{c}" for c in stage.code]
    missing = []
    for module in sorted(seen):
        rel = modules[module].relative_to(ROOT).as_posix()
        if rel.removeprefix("electra/") in INFRASTRUCTURE or rel.endswith("__init__.py"):
            continue
        if not any(rel == c or rel.startswith(c + "/") for c in listed):
            missing.append(rel)
    assert not missing, f"{name} runs code its table row does not list: {missing}"
