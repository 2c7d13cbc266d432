"""Whether a core loads a quantized file, read from the core's own table (QUANT_ALGOS): the reader on the
real releases' comfy/quant_ops.py, the verdicts, and the queue-time refusal text."""

import ast
import json
import os
from pathlib import Path
import subprocess
import sys
from types import SimpleNamespace

import pytest

from tests.model_files import quantize, wan_dit, write_safetensors
from wanfit.models import (QUANT_FORMATS, CoreQuantSupport, ModelMismatchError, check_loads_on_core, core_verdict,
                           detect_variant, support_of)

REPO = Path(__file__).resolve().parents[2]
VENV_ROOT = Path(os.environ.get("WANFIT_VENV_ROOT") or Path.home() / ".cache/wanfit/venv")
NEWEST_VENV_PYTHON = VENV_ROOT / "0.33.0" / "bin" / "python"
OLDEST_VENV_PYTHON = VENV_ROOT / "0.3.64" / "bin" / "python"  # no comfy-kitchen: 0.3.64 does not use it
# The releases where a format arrived (and the oldest), per the first_core column of QUANT_FORMATS.
RELEASES = ("0.3.64", "0.3.68", "0.3.76", "0.8.2", "0.18.1", "0.28.0", "0.31.0", "0.33.0")


def release_path(version):
    return Path.home() / f"ComfyUI-{version}"


def algos_in_source(version):
    """(keys always in QUANT_ALGOS, keys added under an `if`) read from the release's quant_ops.py text."""
    source = release_path(version) / "comfy" / "quant_ops.py"
    if not source.is_file():
        return set(), set()
    tree = ast.parse(source.read_text(encoding="utf-8"))
    always, conditional = set(), set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "QUANT_ALGOS":
            always |= {key.value for key in node.value.keys}
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Subscript):
            always.add(node.targets[0].slice.value)
        elif isinstance(node, ast.If):
            conditional |= {sub.targets[0].slice.value for sub in ast.walk(node)
                            if isinstance(sub, ast.Assign) and isinstance(sub.targets[0], ast.Subscript)
                            and getattr(sub.targets[0].value, "id", None) == "QUANT_ALGOS"}
    return always, conditional


READ_EACH_RELEASE = """
import json, sys
from tests.comfy_import import import_comfy
from wanfit.models import running_core_support
found = {}
for path in sys.argv[1:]:
    for name in [n for n in sys.modules if n == "comfy" or n.startswith("comfy.") or n == "comfyui_version"]:
        del sys.modules[name]
    sys.path[:] = [entry for entry in sys.path if entry not in sys.argv[1:]]
    import_comfy(path)
    support = running_core_support()
    found[path] = [sorted(support.formats), support.reads_comfy_quant_tensors, support.source]
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def release_supports():
    """running_core_support() with each release imported in turn, in one process of 0.33.0's venv."""
    present = [str(release_path(v)) for v in RELEASES if (release_path(v) / "main.py").is_file()]
    if not present or not NEWEST_VENV_PYTHON.is_file():
        pytest.skip("no ComfyUI release checkouts (~/ComfyUI-<version>) or no 0.33.0 venv to import them with")
    done = subprocess.run([str(NEWEST_VENV_PYTHON), "-c", READ_EACH_RELEASE, *present], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return {Path(path).name[len("ComfyUI-"):]: CoreQuantSupport(frozenset(formats), reads, source)
            for path, (formats, reads, source) in found.items()}


@pytest.mark.parametrize("version", RELEASES)
def test_the_reader_gives_each_releases_own_table(release_supports, version):
    if version not in release_supports:
        pytest.skip(f"no ComfyUI {version} checkout")
    support = release_supports[version]
    always, conditional = algos_in_source(version)
    if (release_path(version) / "comfy" / "quant_ops.py").is_file() and always:
        assert support.source == "comfy.quant_ops.QUANT_ALGOS"
        assert always <= support.formats <= always | conditional
    elif version == "0.3.68":  # its one format lived in comfy/ops.py
        assert (support.formats, support.source) == ({"float8_e4m3fn"}, "comfy.ops.QUANT_FORMAT_MIXINS")
    else:
        assert (support.formats, support.source) == (frozenset(), "no comfy/quant_ops.py")
    assert support.reads_comfy_quant_tensors == (version not in ("0.3.64", "0.3.68", "0.3.76"))


@pytest.mark.parametrize("fmt", sorted(QUANT_FORMATS))
def test_each_formats_first_core_has_it_in_its_source(fmt):
    first = QUANT_FORMATS[fmt].first_core
    if not (release_path(first) / "comfy" / "quant_ops.py").is_file():
        pytest.skip(f"no ComfyUI {first} checkout")
    always, conditional = algos_in_source(first)
    assert fmt in always | conditional


def test_a_missing_table_means_no_format_and_an_empty_table_module_too():
    utils = SimpleNamespace()
    assert support_of(None, SimpleNamespace(), utils) == CoreQuantSupport(frozenset(), False, "no comfy/quant_ops.py")
    assert support_of(SimpleNamespace(), SimpleNamespace(), utils).source == "a comfy/quant_ops.py without QUANT_ALGOS"


def info_for(tmp_path, fmt, encoding="metadata"):
    tensors, metadata = quantize(wan_dit(16, 16, dtype="BF16", all_linears=True), fmt, encoding)
    return detect_variant(write_safetensors(tmp_path / f"wan2.2_t2v_{fmt}.safetensors", tensors, metadata))


NO_CORE_TABLE = CoreQuantSupport(frozenset(), False, "no comfy/quant_ops.py")
CORE_0_19 = CoreQuantSupport(frozenset({"float8_e4m3fn", "float8_e5m2", "nvfp4", "mxfp8"}), True,
                             "comfy.quant_ops.QUANT_ALGOS")


def test_a_core_without_the_format_refuses_it_naming_format_release_and_file(tmp_path):
    info = info_for(tmp_path, "int8_tensorwise")
    with pytest.raises(ModelMismatchError) as refused:
        check_loads_on_core(info, CORE_0_19)
    assert str(refused.value).startswith(
        f"This ComfyUI cannot load {info.path}: it is stored in ComfyUI's quantized format (int8_tensorwise, 20 of 20 "
        "block linears; the rest bf16), but this core has no int8_tensorwise: its comfy.quant_ops.QUANT_ALGOS lists "
        "float8_e4m3fn, float8_e5m2, mxfp8, nvfp4. ComfyUI would fail on it while loading. Fix: int8_tensorwise "
        "needs ComfyUI 0.28.0 or later: update ComfyUI, or use the fp8_scaled or fp16 file of this model (")


def test_the_oldest_core_refuses_every_native_format_but_loads_fp8_scaled(tmp_path):
    for fmt in ("nvfp4", "float8_e4m3fn"):
        verdict = core_verdict(info_for(tmp_path, fmt), NO_CORE_TABLE)
        assert not verdict.loads
        assert verdict.reason == f"this core has no {fmt}: it has no comfy/quant_ops.py, so no quantized format"
    scaled = detect_variant(write_safetensors(tmp_path / "s.safetensors", wan_dit(16, 16, fp8_scaled=True)))
    assert check_loads_on_core(scaled, NO_CORE_TABLE).loads
    plain = detect_variant(write_safetensors(tmp_path / "p.safetensors", wan_dit(16, 16)))
    assert check_loads_on_core(plain, NO_CORE_TABLE).reason == "no ComfyUI-quantized layers"


def test_comfy_quant_tensors_need_a_core_that_reads_them(tmp_path):
    info = info_for(tmp_path, "nvfp4", "comfy_quant")
    old = CoreQuantSupport(frozenset({"float8_e4m3fn"}), False, "comfy.quant_ops.QUANT_ALGOS")
    assert core_verdict(info, old).fix.startswith("files with .comfy_quant tensors need ComfyUI 0.5.0 or later")
    assert core_verdict(info, CORE_0_19).loads


def test_a_core_with_the_format_loads_it(tmp_path):
    assert core_verdict(info_for(tmp_path, "mxfp8"), CORE_0_19).reason == "mxfp8 in comfy.quant_ops.QUANT_ALGOS"


def check_file_on(version, path):
    """`python -m wanfit models --check-file PATH` in a process where the release is importable."""
    if not (release_path(version) / "main.py").is_file() or not NEWEST_VENV_PYTHON.is_file():
        pytest.skip(f"no ComfyUI {version} checkout or no 0.33.0 venv")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(release_path(version))]))
    return subprocess.run([str(NEWEST_VENV_PYTHON), "-m", "wanfit", "models", "--check-file", str(path)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)


def test_check_file_says_whether_the_importable_core_loads_it(tmp_path):
    tensors, metadata = quantize(wan_dit(16, 16, dtype="BF16", all_linears=True), "nvfp4")
    path = write_safetensors(tmp_path / "wan2.2_t2v_high_noise_14B_nvfp4.safetensors", tensors, metadata)
    newest = check_file_on("0.33.0", path)
    assert newest.returncode == 0, newest.stderr[-2000:]
    assert "loads on this core: yes (nvfp4 in comfy.quant_ops.QUANT_ALGOS)\ncomputes on this machine: " in newest.stdout
    assert "\nloads with: WanFit Load" in newest.stdout
    oldest = check_file_on("0.3.64", path)
    assert oldest.returncode == 2
    assert ("loads on this core: no (this core has no nvfp4: it has no comfy/quant_ops.py, so no quantized format)"
            in oldest.stdout)
    assert ("Fix: nvfp4 needs ComfyUI 0.8.2 or later: update ComfyUI, or use the fp8_scaled or fp16 file"
            in oldest.stderr)
    assert "loads with" not in oldest.stdout


def test_a_core_whose_comfy_kitchen_is_missing_loads_nothing_quantized(tmp_path):
    assert support_of(SimpleNamespace(QUANT_ALGOS={"nvfp4": {}}, _CK_AVAILABLE=False), SimpleNamespace(),
                      SimpleNamespace(convert_old_quants=None)) == CoreQuantSupport(
        frozenset(), False, "comfy.quant_ops without comfy-kitchen (its import failed)", missing_kitchen=True,
        reads_fp8_scaled_as_float8=True)
    stub = SimpleNamespace(QUANT_ALGOS={"nvfp4": {}}, QuantizedTensor=type("QuantizedTensor", (), {}))
    assert support_of(stub, SimpleNamespace(), SimpleNamespace()).missing_kitchen
    without = support_of(stub, SimpleNamespace(), SimpleNamespace())
    verdict = core_verdict(info_for(tmp_path, "nvfp4"), without)
    assert (verdict.loads, verdict.reason) == (False, "this core loads its quantized layers through comfy-kitchen, "
                                                      "which failed to import")
    assert verdict.fix.startswith("install comfy-kitchen into ComfyUI's Python (pip install -r requirements.txt")
    scaled = detect_variant(write_safetensors(tmp_path / "s.safetensors", wan_dit(16, 16, fp8_scaled=True)))
    assert core_verdict(scaled, without).loads  # a core that reads fp8_scaled itself, not through quant_ops


# Run on a real release without comfy-kitchen: a real fp8_scaled WAN (the core's own WanModel, random weights),
# WanFit's verdict, and the core's own load of it.
KITCHEN_PROBE = """
import json, re, sys
path = sys.argv[1]
sys.argv = sys.argv[:1] + ["--cpu"]
import comfy.options
comfy.options.enable_args_parsing()
import torch, safetensors.torch
import comfy.ldm.wan.model, comfy.ops, comfy.sd
from wanfit.models import core_verdict, detect_variant, running_core_support

model = comfy.ldm.wan.model.WanModel(in_dim=16, dim=128, ffn_dim=256, num_heads=1, num_layers=2, out_dim=16,
                                     operations=comfy.ops.disable_weight_init)
state = {}
for name, tensor in model.state_dict().items():
    tensor = torch.randn(tensor.shape, generator=torch.Generator().manual_seed(len(state))) * 0.02
    if re.search(r"blocks\\.\\d+\\.((self|cross)_attn\\.[qkvo]|ffn\\.[02])\\.weight$", name):
        scale = tensor.abs().max() / 448
        state[name] = (tensor / scale).to(torch.float8_e4m3fn)
        state[name[:-len("weight")] + "scale_weight"] = scale.reshape(1)
    else:
        state[name] = tensor.half()
state["scaled_fp8"] = torch.zeros(0, dtype=torch.float8_e4m3fn)
safetensors.torch.save_file(state, path)
verdict = core_verdict(detect_variant(path), running_core_support())
try:
    comfy.sd.load_diffusion_model(path)
    core = "loaded"
except Exception as error:
    core = f"{type(error).__name__}: {error}"
print(json.dumps({"loads": verdict.loads, "reason": verdict.reason, "fix": verdict.fix, "core": core}))
"""


@pytest.mark.parametrize("python, kitchen", [(OLDEST_VENV_PYTHON, False), (NEWEST_VENV_PYTHON, True)],
                         ids=["without-comfy-kitchen", "with-comfy-kitchen"])
def test_on_0_8_2_the_verdict_on_an_fp8_scaled_file_is_what_the_core_does(tmp_path, python, kitchen):
    """0.8.2 lists nvfp4 in QUANT_ALGOS whether or not comfy-kitchen imports; without it the core fails on every
    quantized file, fp8_scaled too. WanFit's verdict must say so before the load, and agree with it with the kitchen."""
    if not (release_path("0.8.2") / "main.py").is_file() or not python.is_file():
        pytest.skip("no ComfyUI 0.8.2 checkout or no venv to import it with")
    has_kitchen = subprocess.run([str(python), "-c", "import comfy_kitchen"], capture_output=True).returncode == 0
    if has_kitchen != kitchen:
        pytest.skip(f"{python} {'has' if has_kitchen else 'lacks'} comfy-kitchen, which this case needs "
                    f"{'present' if kitchen else 'absent'}")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(release_path("0.8.2"))]), CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([str(python), "-c", KITCHEN_PROBE, str(tmp_path / "wan_fp8_scaled.safetensors")], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["loads"] == (found["core"] == "loaded") == kitchen, found
    if not kitchen:
        assert found["reason"] == ("this core loads fp8_scaled, which it reads as float8_e4m3fn, through comfy-kitchen, "
                                   "which failed to import")
        assert "'NoneType' object has no attribute 'Params'" in found["core"]
