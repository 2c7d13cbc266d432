"""ComfyUI imports WanFit cleanly (that the import stays light is tests/unit/test_package_import.py)."""


def test_wanfit_imports_without_error(server, object_info):
    seconds = server.custom_node_import_seconds()  # raises when ComfyUI reports IMPORT FAILED
    assert seconds is not None, f"ComfyUI printed no import time for ComfyUI-WanFit:\n{server.log_tail()}"
    assert "WanFitDeviceInfo" in object_info
    assert "WanFitTestTextEncode" in object_info, "the test-only nodes were not loaded"


def test_device_info_node_reports_cpu(client):
    entry = client.run({"1": {"class_type": "WanFitDeviceInfo", "inputs": {}}}, timeout_s=60)
    summary = entry["outputs"]["1"]["text"][0]
    assert "CPU only" in summary
    assert "System RAM:" in summary and "GB free of" in summary
    assert "ComfyUI 0." in summary, summary
    assert "sageattention" in summary


def test_front_end_extension_and_node_help_page_are_served(client):
    status, script = client._request("GET", "/extensions/ComfyUI-WanFit/wanfit.js")
    assert status == 200 and b"registerExtension" in script
    status, help_page = client._request("GET", "/extensions/ComfyUI-WanFit/docs/WanFitDeviceInfo/en.md")
    assert status == 200 and help_page.startswith(b"# WanFit Device Info")


def test_every_wanfit_input_has_a_tooltip(object_info):
    missing = []
    for name, info in object_info.items():
        if not name.startswith("WanFit") or info.get("category", "").endswith("testing"):
            continue
        for section in ("required", "optional"):
            for input_name, spec in info["input"].get(section, {}).items():
                options = spec[1] if len(spec) > 1 else {}
                if not options.get("tooltip"):
                    missing.append(f"{name}.{input_name}")
        assert info.get("description"), f"{name} has no DESCRIPTION"
    assert not missing, f"inputs without a tooltip: {missing}"
