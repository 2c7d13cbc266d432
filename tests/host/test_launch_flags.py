"""The launch flags `python -m wanfit plan --print-args --core <this core>` emits, parsed by this core's real parser.

The host tier runs once per supported core with COMFYUI_PATH at that core and that core's
venv python as sys.executable, so each run proves the flags for the core it runs on.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from wanfit.core import core_from_checkout
from wanfit.plan import GPU_TIERS, MODEL_VARIANTS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NEVER_ON_DYNAMIC_VRAM = {"--lowvram", "--novram", "--highvram", "--gpu-only"}
RAM_GB = (32, 64, 256)  # 32 GB drops models (cache flags), 64/256 GB keep them


@pytest.fixture(scope="module")
def core_path(comfyui):
    return comfyui


def wanfit_plan(*args):
    env = {k: v for k, v in os.environ.items() if k != "GPU_TIER"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    return subprocess.run([sys.executable, "-m", "wanfit", "plan", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def emitted(core_path):
    """{(tier, model, RAM GB): the --print-args line} for every GPU tier and model (refusals left out)."""
    lines = {}
    for tier in GPU_TIERS:
        for model in MODEL_VARIANTS:
            for ram_gb in RAM_GB:
                result = wanfit_plan("--print-args", "--core", str(core_path), "--tier", tier, "--model", model,
                                     "--system-ram-gb", str(ram_gb))
                if result.returncode == 2 and "does not fit" in result.stderr:
                    continue
                assert result.returncode == 0, f"{tier} {model} {ram_gb} GB: {result.stderr}"
                assert len(result.stdout.strip().splitlines()) == 1, result.stdout
                lines[(tier, model, ram_gb)] = result.stdout.strip()
    assert len(lines) >= len(GPU_TIERS) * len(MODEL_VARIANTS), sorted(lines)
    return lines


PARSE = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    import comfy.options  # argument parsing stays off: importing cli_args parses [] instead of sys.argv
    import comfy.cli_args as cli_args
    lines = json.loads(sys.stdin.read())
    rejected = {}
    for line in lines:
        try:
            cli_args.parser.parse_args(line.split())
        except SystemExit as exit:
            rejected[line] = exit.code
    options = sorted(o for o in cli_args.parser._option_string_actions if o.startswith("--") and o != "--help")
    print(json.dumps({"rejected": rejected, "options": options}))
""")


def real_parser(core_path, lines):
    result = subprocess.run([sys.executable, "-c", PARSE, str(core_path)], input=json.dumps(sorted(set(lines))),
                            capture_output=True, text=True, timeout=120, cwd=str(core_path))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_real_parser_accepts_every_emitted_line(core_path, emitted):
    parsed = real_parser(core_path, emitted.values())
    assert not parsed["rejected"], f"ComfyUI at {core_path} rejected: {parsed['rejected']} ({parsed['rejected']})"


def test_every_emitted_flag_is_one_this_core_defines(core_path, emitted):
    options = set(real_parser(core_path, [])["options"])
    for key, line in emitted.items():
        unknown = [item for item in line.split() if item.startswith("--") and item not in options]
        assert not unknown, f"{key}: {line!r} uses {unknown}, which ComfyUI at {core_path} does not define"


def test_the_static_reading_matches_the_real_parser(core_path):
    assert core_from_checkout(core_path).flags == set(real_parser(core_path, [])["options"])


def test_dynamic_vram_cores_never_get_flags_that_fight_it(core_path, emitted):
    core = core_from_checkout(core_path)
    if not core.dynamic_vram:
        assert any("--lowvram" in line for line in emitted.values())  # partial loading still uses it
        return
    for key, line in emitted.items():
        fighting = NEVER_ON_DYNAMIC_VRAM & set(line.split())
        assert not fighting, f"{key}: {line!r} has {fighting} on ComfyUI {core.version_text}"
        assert "--async-offload" not in line.split(), f"{key}: async offload is already on by default there"


def test_json_names_this_core_and_its_memory_manager(core_path):
    result = wanfit_plan("--json", "--core", str(core_path), "--tier", "CONSUMER_8GB", "--model", "t2v_a14b",
                         "--width", "832", "--height", "480", "--system-ram-gb", "64")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    core = core_from_checkout(core_path)
    assert data["core_version"] == core.version_text
    assert data["memory_manager"] == ("dynamic_vram" if core.dynamic_vram else "partial_loading")


def test_unknown_core_path_exits_2_naming_it(tmp_path):
    result = wanfit_plan("--print-args", "--tier", "PROSUMER_24GB", "--core", str(tmp_path / "nowhere"))
    assert result.returncode == 2 and result.stdout == ""
    assert str(tmp_path / "nowhere") in result.stderr and "Traceback" not in result.stderr


def test_core_older_than_the_minimum_is_refused_naming_it():
    result = wanfit_plan("--print-args", "--tier", "PROSUMER_24GB", "--core", "0.3.60")
    assert result.returncode == 2 and result.stdout == ""
    assert "0.3.64" in result.stderr and "Traceback" not in result.stderr
