"""The CI files that cannot run here (no GitHub runner): parsed and cross-checked against the script they drive."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

CI = Path(__file__).resolve().parents[2] / "ci"


def _load(name: str) -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((CI / name).read_text())


def test_action_inputs_outputs_and_script_flags_agree() -> None:
    action = _load("action.yml")
    text = (CI / "action.yml").read_text()
    used = set(re.findall(r"\binputs\.([\w-]+)", text))
    assert used == set(action["inputs"]), used ^ set(action["inputs"])  # none missing, none unused
    steps = action["runs"]["steps"]
    fix = next(s for s in steps if s.get("id") == "fix")
    for name, output in action["outputs"].items():
        assert output["value"] == f"${{{{ steps.fix.outputs.{name} }}}}"
    # Inputs reach the shell only through env: no ${{ }} inside any run script.
    for step in steps:
        assert "${{" not in step.get("run", ""), step.get("name")
    # Every variable the script reads is set by the step's env (or by the runner).
    runner = {"GITHUB_ACTION_PATH", "RUNNER_TEMP", "name", "code", "stop"}  # the runner's, or shell locals
    read = set(re.findall(r"\$\{?!?([A-Za-z_]+)", fix["run"]))
    assert read <= set(fix["env"]) | runner, read - set(fix["env"]) - runner
    # Every flag the action passes exists in stockade-fix.
    helptext = subprocess.run([sys.executable, str(CI / "stockade-fix"), "--help"], capture_output=True,
                              text=True, check=True).stdout
    for flag in set(re.findall(r"(--[a-z][a-z-]+)", fix["run"])):
        assert flag in helptext, flag


def test_the_outputs_the_action_promises_are_the_ones_the_script_writes() -> None:
    source = (CI / "stockade-fix").read_text()
    for name in _load("action.yml")["outputs"]:
        assert f"{name}=" in source, name


def test_example_workflow_uses_the_action_outputs_it_declares() -> None:
    workflow = _load("examples/fix-failing-tests.yml")
    steps = workflow["jobs"]["test"]["steps"]
    assert any(s.get("id") == "fix" for s in steps)
    text = (CI / "examples" / "fix-failing-tests.yml").read_text()
    outputs = set(_load("action.yml")["outputs"])
    for name in re.findall(r"steps\.fix\.outputs\.([\w-]+)", text):
        assert name in outputs, name
