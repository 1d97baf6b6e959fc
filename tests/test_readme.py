"""README.md opens with the two set-up commands, and CI runs exactly its test command."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _opening_commands():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text)[:2]


def test_readme_opens_with_main_job_and_test_commands():
    main_job, tests = _opening_commands()
    assert main_job.startswith("./scripts/setup.sh && ") and "python -m study.run ablation_pretraining" in main_job
    assert tests.startswith("./scripts/setup.sh && ") and "pytest" in tests


def test_ci_runs_the_readme_test_command():
    _, tests = _opening_commands()
    ci_lines = [l.strip() for l in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert tests in ci_lines
