"""The README's test command is exactly what CI runs."""
from conftest import ROOT


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1]
    assert ci.strip() in readme
    assert "torch==2.13.0" in ci and "pytest" in ci
