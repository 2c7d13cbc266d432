"""WanFit's V3 node schemas on one release: each builds, and the shipped workflows' widget values fit it.

ComfyUI loads the package as it does at start-up (comfy_entrypoint -> ComfyExtension -> node list), then
each node's schema is built (GET_SCHEMA: define_schema, finalize, validate) and turned into the V1 info
/object_info serves (GET_NODE_INFO_V1). A saved UI workflow stores a node's widget values by position, so
every WanFit node in workflows/ui and example_workflows must have exactly as many values as the node has
widgets, each one a value that widget takes, landing on the input names its API twin (workflows/api) uses.
"""

import asyncio
import importlib.util
import json
from pathlib import Path
import sys

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "ComfyUI_WanFit"  # any name: ComfyUI imports the folder under the name it was cloned as
# dropdowns listing the model and output folders: empty in a bare checkout, so a saved file name is only
# checked to be a name
FILE_INPUTS = ("model_name", "high_noise_model", "low_noise_model", "clip_name", "vae_name", "latent")
WIDGET_KINDS = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")


def load_package():
    """The package as ComfyUI imports a custom node folder."""
    if PACKAGE in sys.modules:
        return sys.modules[PACKAGE]
    spec = importlib.util.spec_from_file_location(PACKAGE, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module
    spec.loader.exec_module(module)
    return module


def node_infos():
    """{node id: the V1 info /object_info would serve}, through comfy_entrypoint as ComfyUI calls it."""
    from comfy_api.latest import ComfyExtension, io

    extension = load_package().comfy_entrypoint()
    if not isinstance(extension, ComfyExtension):
        raise TypeError(f"comfy_entrypoint returned {type(extension).__name__}, not a ComfyExtension")
    infos = {}
    for node in asyncio.run(extension.get_node_list()):
        if not issubclass(node, io.ComfyNode):
            raise TypeError(f"{node.__name__} is no io.ComfyNode")
        schema = node.GET_SCHEMA()
        info = node.GET_NODE_INFO_V1()
        if info["name"] != schema.node_id or schema.node_id in infos:
            raise ValueError(f"{node.__name__}: node id {schema.node_id!r} is not unique or not served as such")
        infos[schema.node_id] = info
    return infos


def widget_specs(info):
    """[(input name, (kind, options))] of the inputs shown as widgets, in the order a UI workflow stores them."""
    specs = []
    for section in ("required", "optional"):
        inputs = info["input"].get(section, {})
        for name in info["input_order"].get(section, list(inputs)):
            kind, options = inputs[name][0], (inputs[name][1] if len(inputs[name]) > 1 else {})
            if isinstance(kind, list):
                kind, options = "COMBO", {**options, "options": kind}
            if kind in WIDGET_KINDS:
                specs.append((name, kind, options))
    return specs


def misfit(name, kind, options, value):
    """Why `value` does not fit this widget, or None."""
    if kind == "COMBO":
        if name in FILE_INPUTS:
            return None if isinstance(value, str) and value else f"{value!r} is no file name"
        return None if value in options.get("options", []) else f"{value!r} is not one of {options.get('options')}"
    if kind == "BOOLEAN":
        return None if isinstance(value, bool) else f"{value!r} is not true/false"
    if kind == "STRING":
        return None if isinstance(value, str) else f"{value!r} is not text"
    if isinstance(value, bool) or not isinstance(value, int if kind == "INT" else (int, float)):
        return f"{value!r} is not {'an integer' if kind == 'INT' else 'a number'}"
    low, high = options.get("min", value), options.get("max", value)
    return None if low <= value <= high else f"{value!r} is outside [{low}, {high}]"


def shipped_ui_workflows():
    """{path relative to the repository: the UI workflow}, every one the package ships."""
    paths = sorted((REPO / "workflows" / "ui").glob("*.json")) + sorted((REPO / "example_workflows").glob("*.json"))
    return {str(path.relative_to(REPO)): json.loads(path.read_text(encoding="utf-8")) for path in paths}


def api_twin(relative_path):
    twin = REPO / "workflows" / "api" / Path(relative_path).name
    return json.loads(twin.read_text(encoding="utf-8")) if relative_path.startswith("workflows/ui/") else None


def workflow_problems(infos):
    """Every WanFit node of every shipped UI workflow whose widget values do not fit its schema."""
    from wanfit.workflows import ui_to_api

    problems, checked = [], 0
    for relative_path, workflow in shipped_ui_workflows().items():
        twin = api_twin(relative_path)
        for node in workflow["nodes"]:
            if not node["type"].startswith("WanFit"):
                continue
            where = f"{relative_path} node {node['id']} ({node['type']})"
            info = infos.get(node["type"])
            if info is None:
                problems.append(f"{where}: no such node")
                continue
            checked += 1
            specs = widget_specs(info)
            values = list(node.get("widgets_values") or [])
            if len(values) != len(specs):
                problems.append(f"{where}: {len(values)} widget values {values} for {len(specs)} widgets "
                                f"{[name for name, _, _ in specs]}")
                continue
            problems += [f"{where}.{name}: {why}" for (name, kind, options), value in zip(specs, values)
                         if (why := misfit(name, kind, options, value))]
            named = ui_to_api({"nodes": [{**node, "inputs": []}], "links": []}, infos)[str(node["id"])]["inputs"]
            if twin is not None:
                expected = {name: value for name, value in twin[str(node["id"])]["inputs"].items()
                            if not isinstance(value, list)}
                if named != expected:
                    problems.append(f"{where}: widget values land on {named}, the API twin has {expected}")
    return problems, checked


def check(release, failed):
    release.require("comfy.samplers")  # WanFit A14B Expert Switch Step lists the release's schedulers
    infos = node_infos()
    problems, checked = workflow_problems(infos)
    details = {"nodes": sorted(infos), "workflow_nodes_checked": checked,
               "widgets": {name: [spec[0] for spec in widget_specs(info)] for name, info in infos.items()}}
    if len(infos) != 13:
        problems.append(f"expected the 13 WanFit nodes, the extension lists {len(infos)}: {sorted(infos)}")
    if problems:
        raise failed(f"{len(problems)} problems; first: {problems[0]}", {**details, "problems": problems})
    return details
