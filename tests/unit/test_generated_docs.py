"""The plan tables in docs/ are what the planner says today (regenerate them when the plan changes)."""

from pathlib import Path
import subprocess
import sys

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("doc, arguments", [("docs/plan_matrix.md", []), ("docs/launch_flags.md", ["--launch-flags"])])
def test_generated_doc_is_up_to_date(doc, arguments):
    result = subprocess.run([sys.executable, "bench/plan_matrix.py", *arguments], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    command = " ".join(["python bench/plan_matrix.py", *arguments, ">", doc])
    assert (REPO_ROOT / doc).read_text() == result.stdout, f"{doc} is out of date: run `{command}`"
