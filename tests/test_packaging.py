"""The project's own set-up files agree with each other."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_requirements() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = set(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs.update(r for r in extra if not r.startswith("enos_lab"))
    return reqs


def _environment_pip_entries() -> list[str]:
    text = (ROOT / "environment.yml").read_text()
    pip_block = text.split("- pip:", 1)[1]
    return re.findall(r'^\s+- "([^"]+)"\s*$', pip_block, flags=re.MULTILINE)


def test_environment_yml_lists_every_pyproject_requirement_with_the_same_bound() -> None:
    entries = _environment_pip_entries()
    installs = [e for e in entries if e.startswith("-e ")]
    assert installs == ["-e .[notebooks,test]"]
    assert set(entries) - set(installs) == _pyproject_requirements()


def test_environment_yml_pins_python_3_11() -> None:
    assert re.search(r"^\s+- python=3\.11\s*$", (ROOT / "environment.yml").read_text(), re.M)


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- test-command -->\s*```(?:bash|sh)?\n(.+?)\n```", readme, re.S)
    assert match, "README.md must mark its test command with <!-- test-command -->"
    command = match.group(1).strip()
    ci_lines = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert ci_lines[-1] == command


def test_console_script_points_at_cli_main() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["enos-lab"] == "enos_lab.cli:main"


def test_the_readme_run_command_opens_the_tutorials_as_any_user() -> None:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- run-command -->\s*```(?:bash|sh)?\n(.+?)\n```", readme, re.S)
    assert match, "README.md must mark its run command with <!-- run-command -->"
    install, run = match.group(1).strip().split(" && ")
    assert install == 'python3.11 -m pip install -e ".[notebooks]"'
    assert run == "python3.11 -m enos_lab tutorials"  # adds --allow-root for root users
