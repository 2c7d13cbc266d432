"""The release matrix: every check in tests/matrix/run_check.py against every release, in-process.

Releases: tests/matrix/releases.txt plus the two full cores (0.3.64, 0.33.0), each a checkout at
$WANFIT_CORE_<version with _> or ~/ComfyUI-<version> (bash tests/matrix/get_cores.sh makes them).
All run with this interpreter, ComfyUI 0.33.0's venv under tests/run.sh. Each (release, check)
is a fresh `run_check.py` process (comfy imports once per process); they run side by side,
WANFIT_MATRIX_JOBS at a time (default: the CPU count, at most 4), and each test reads its own.
"""

from concurrent.futures import ThreadPoolExecutor
import json
import os
from pathlib import Path
import subprocess
import sys

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
from run_check import CHECKS, DECODE_CHECKS  # noqa: E402

FULL_CORES = ("0.3.64", "0.33.0")
TIMEOUT_S = int(os.environ.get("WANFIT_MATRIX_TIMEOUT_S", "300"))
RESULTS = REPO / "artifacts" / "matrix" / "results.json"  # every result of the last run (ignored by git)
# Compiled modules go here, never into a checkout (the test command writes into none).
PYCACHE = os.environ.get("PYTHONPYCACHEPREFIX") or str(Path.home() / ".cache/wanfit/pycache")


JOBS = int(os.environ.get("WANFIT_MATRIX_JOBS") or min(os.cpu_count() or 1, 4))
# the checks run side by side: each gets its share of the cores, not torch's default of all of them
THREADS_PER_CHECK = max(1, (os.cpu_count() or 1) // max(1, JOBS))


def version_key(text):
    return tuple(int(part) for part in text.split("."))


def listed_releases():
    """(version, why) for each line of releases.txt."""
    listed = []
    for line in (HERE / "releases.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            version, _, why = line.strip().partition(" ")
            listed.append((version, why.strip()))
    return listed


RELEASES = sorted({version for version, _ in listed_releases()} | set(FULL_CORES), key=version_key)
# The decode checks cost ~1 min of CPU per release: they run where the WAN VAEs changed (marked "decode"
# in releases.txt) and on both full cores.
DECODE_RELEASES = {version for version, why in listed_releases() if why.startswith("decode")} | set(FULL_CORES)


def pairs():
    for version in RELEASES:
        for check in CHECKS:
            if check not in DECODE_CHECKS or version in DECODE_RELEASES:
                yield version, check


def checkout(version):
    return Path(os.environ.get(f"WANFIT_CORE_{version.replace('.', '_')}") or Path.home() / f"ComfyUI-{version}")


def run_one(version, check):
    """Run one check in a fresh process: its JSON result, or a failed result saying what went wrong."""
    path = checkout(version)
    if not (path / "comfyui_version.py").is_file():
        return {"outcome": "missing", "message": f"no ComfyUI {version} checkout at {path}. Fix: bash "
                                                 "tests/matrix/get_cores.sh (or set WANFIT_CORE_" +
                                                 version.replace(".", "_") + " to a checkout of it)"}
    command = [sys.executable, str(HERE / "run_check.py"), "--core", str(path), "--check", check]
    try:
        done = subprocess.run(command, cwd=str(REPO), capture_output=True, text=True, timeout=TIMEOUT_S,
                              env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPYCACHEPREFIX": PYCACHE,
                                   "OMP_NUM_THREADS": str(THREADS_PER_CHECK)})
    except subprocess.TimeoutExpired as timeout:
        return {"outcome": "crashed", "message": f"took over {TIMEOUT_S} s; stderr tail: "
                                                 f"{(timeout.stderr or b'')[-2000:]!r}"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                break
    return {"outcome": "crashed", "message": f"{' '.join(command)} exited {done.returncode} without a result "
                                             f"line; stderr tail:\n{done.stderr[-3000:]}"}


@pytest.fixture(scope="session")
def matrix(request):
    """{(version, check): future result}: every selected pair starts at once, WANFIT_MATRIX_JOBS at a time."""
    selected = []
    for item in request.session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if getattr(item, "originalname", "") == "test_release":
            selected.append((params["version"], params["check"]))
    pool = ThreadPoolExecutor(max_workers=max(1, JOBS))
    # the decode checks take longest: started first, so the short ones fill the gaps at the end
    ordered = sorted(dict.fromkeys(selected), key=lambda pair: pair[1] not in DECODE_CHECKS)
    futures = {pair: pool.submit(run_one, *pair) for pair in ordered}
    try:
        yield futures
    finally:  # a stopped session (-x, Ctrl-C) starts no further checks
        pool.shutdown(wait=True, cancel_futures=True)
        done = [{"release": version, **future.result()} for (version, _), future in futures.items()
                if future.done() and not future.cancelled()]
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(done, indent=1, default=str))


def details_text(result):
    details = result.get("details") or {}
    shown = {key: value for key, value in details.items() if key != "traceback"}
    text = json.dumps(shown, default=str)[:1500]
    return text + ("\n" + details["traceback"] if "traceback" in details else "")


@pytest.mark.parametrize("version, check", [pytest.param(version, check, id=f"{version}-{check}")
                                            for version, check in pairs()])
def test_release(version, check, matrix):
    result = matrix[(version, check)].result()
    where = f"check {check!r} on ComfyUI {version} ({checkout(version)})"
    if result["outcome"] == "skipped":
        pytest.skip(f"{where}: {result['message']}")
    assert result["outcome"] == "passed", (
        f"{where}: expected it to pass, came out {result['outcome']}: {result['message']}\n"
        f"details: {details_text(result)}")


def test_the_matrix_lists_releases_between_the_full_cores_in_order():
    listed = [version for version, _ in listed_releases()]
    assert listed == sorted(listed, key=version_key), f"releases.txt is out of order: {listed}"
    assert len(set(listed)) == len(listed), f"releases.txt lists a release twice: {listed}"
    low, high = (version_key(v) for v in FULL_CORES)
    outside = [v for v in listed if not low < version_key(v) < high]
    assert not outside, f"releases.txt should hold releases strictly between {FULL_CORES}, not {outside}"
    assert all(why for _, why in listed_releases()), "each line of releases.txt says why that release is there"
