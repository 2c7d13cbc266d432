"""pyproject.toml is what the Comfy Registry expects; ComfyUI's own parser reads it."""

from pathlib import Path

from tests.comfy_import import import_comfy

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_comfyui_parses_pyproject(comfyui):
    import_comfy(comfyui)
    from comfy_config import config_parser

    config = config_parser.extract_node_configuration(str(REPO_ROOT))
    assert config is not None, "ComfyUI could not parse pyproject.toml"
    assert config.project.name == "comfyui-wanfit"
    assert config.tool_comfy.display_name == "WanFit"
    assert config.tool_comfy.publisher_id == "wanfit"
    assert config.project.supported_comfyui_version == ">=0.3.64"
