"""The device probe on this machine, and the summary text for CPU and GPU devices."""

from wanfit.device import DeviceInfo, probe_device
from wanfit.units import gib_to_bytes


def test_probe_on_a_machine_without_gpu_says_cpu():
    info = probe_device("cpu")
    assert info.kind == "cpu" and not info.is_gpu
    assert info.total_vram_bytes == 0 and info.compute_capability is None
    assert info.total_ram_bytes > gib_to_bytes(1) and 0 < info.free_ram_bytes <= info.total_ram_bytes
    assert info.attention_backends["pytorch_sdpa"] == info.torch_version
    assert "sageattention" in info.attention_backends
    assert info.summary().startswith("Device: CPU only")


def test_gpu_summary_names_card_capability_and_vram():
    info = DeviceInfo(kind="cuda", name="NVIDIA GeForce RTX 4090", total_vram_bytes=gib_to_bytes(24),
                      free_vram_bytes=gib_to_bytes(20.5), compute_capability=(8, 9),
                      total_ram_bytes=gib_to_bytes(64), free_ram_bytes=gib_to_bytes(50),
                      torch_version="2.8.0", cuda_version="12.8", comfyui_version="0.3.64",
                      attention_backends={"pytorch_sdpa": "2.8.0", "sageattention": "2.2.0"})
    summary = info.summary()
    assert "NVIDIA GeForce RTX 4090 (cuda, compute capability 8.9)" in summary
    assert "VRAM: 20.5 GB free of 24.0 GB" in summary
    assert "sageattention 2.2.0" in summary
    assert info.as_dict()["compute_capability"] == [8, 9]


def test_cli_device_json(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    result = subprocess.run([sys.executable, "-m", "wanfit", "device", "--json"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[2], timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["kind"] == "cpu"
