"""The activation simulation counts on the meta device what a real run holds, on this core.

bench/activation_peak.py --validate builds this core's WanModel small (dim 256, 2 layers,
480 tokens; one FFN-peaked and one attention-peaked width) twice - on meta and on the CPU with
real random tensors - and counts live storages the same way in both. RoPE runs eager (0.33:
comfy-kitchen's eager backend), the case the planner counts. In a child process: the bench
parses the core's arguments with --use-pytorch-cross-attention, which must not leak into this
test process's ComfyUI imports.
"""

import json
from pathlib import Path
import subprocess
import sys

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_meta_simulation_matches_a_real_cpu_run_and_the_planner(comfyui, tmp_path):
    report = tmp_path / "validation.json"
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "activation_peak.py"), "--validate", "--rope", "eager",
         "--core-path", str(comfyui), "--json", str(report)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert report.is_file(), (f"the bench wrote no report (rc {completed.returncode}):\n"
                              f"{completed.stdout}\n{completed.stderr}")
    rows = json.loads(report.read_text())["validation"]
    assert [row["batch"] for row in rows] == [1, 2, 1, 2]
    for row in rows:
        where = f"{row['config']}, batch {row['batch']} on {comfyui}"
        assert row["meta_peak_bytes"] == row["real_peak_bytes"], (
            f"{where}: meta peak {row['meta_peak_bytes']:,} B, real CPU peak {row['real_peak_bytes']:,} B; "
            "expected equal")
        assert row["meta_live_after_bytes"] == row["real_live_after_bytes"] == 0, (
            f"{where}: a freed storage went unseen")
        assert row["output_finite"], f"{where}: the real run's output is not finite"
        assert row["meta_peak_bytes"] < row["allocated_bytes"] / 3, f"{where}: the peak should be far below the total"
        assert 1.05 <= row["predicted_over_simulated"] <= 1.30, (
            f"{where}: planner predicted / simulated = {row['predicted_over_simulated']:.3f}, expected 1.05-1.30")
    assert completed.returncode == 0, completed.stdout + completed.stderr
