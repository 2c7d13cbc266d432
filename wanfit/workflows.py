"""The shipped workflows: load, fill (prompt, size, frames, seed...), and UI <-> API conversion.

API-format files (workflows/api/<name>.json) are what /prompt takes; their node ids are
stable and `workflows/api/inputs.json` says which node input holds the prompt, size, frames,
steps, seed... UI-format files (workflows/ui/, example_workflows/) are what the graph editor
opens; `ui_to_api` turns one into its API twin with the server's /object_info, as the
front end does when it queues a prompt.
"""

import copy
import json
import os
from pathlib import Path

from .errors import InvalidInputError, WanFitError

WORKFLOWS_DIR = Path(__file__).resolve().parents[1] / "workflows"
FRONTEND_ONLY_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
# INT inputs that get an extra "control_after_generate" widget value in the UI format
SEED_CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}


class WorkflowError(WanFitError):
    """A workflow name, file or value is wrong."""


def resolve_workflows_dir(override=None):
    """Where the workflows live: `override`, else $WANFIT_WORKFLOWS_DIR, else the shipped folder
    (tests and `wanfit run --workflow-file` point it at a folder of their own)."""
    return Path(override or os.environ.get("WANFIT_WORKFLOWS_DIR") or WORKFLOWS_DIR)


def workflow_names(workflows_dir=None):
    return sorted(load_input_map(workflows_dir))


def load_input_map(workflows_dir=None):
    return json.loads((resolve_workflows_dir(workflows_dir) / "api" / "inputs.json").read_text())


def load_api_workflow(name, workflows_dir=None):
    names = sorted(load_input_map(workflows_dir))
    if name not in names:
        raise InvalidInputError("workflow", name, "one of " + ", ".join(names))
    return json.loads((resolve_workflows_dir(workflows_dir) / "api" / f"{name}.json").read_text())


def fill_workflow(name, workflows_dir=None, **values):
    """The API workflow `name` with the given fields set (prompt, negative, image, width, height,
    frames, steps, seed, cfg, fps, filename_prefix); None leaves the shipped default."""
    workflow = load_api_workflow(name, workflows_dir)
    spec = load_input_map(workflows_dir)[name]
    fields = spec["fields"]
    unknown = sorted(key for key, value in values.items() if value is not None and key not in fields)
    if unknown:
        raise InvalidInputError(unknown[0], values[unknown[0]],
                                f"one of the fields of workflow {name}: " + ", ".join(sorted(fields)))
    if spec.get("needs_image") and not values.get("image"):
        raise InvalidInputError("image", None, f"an input image: {name} is image-to-video",
                                "pass --image PATH (a PNG or JPEG; it is uploaded to the server)")
    frames = values.get("frames")
    if frames is not None and (frames < 1 or (frames - 1) % 4):
        below = max(1, (frames - 1) // 4 * 4 + 1)
        raise InvalidInputError("frames", frames, "4n+1 (5, 9, ..., 81, ..., 121): the VAE packs 4 frames into "
                                "one latent frame", f"use {below} or {below + 4}")
    multiple = spec.get("size_multiple", 16)
    for field in ("width", "height"):
        size = values.get(field)
        if size is not None and (size <= 0 or size % multiple):
            raise InvalidInputError(field, size, f"a positive multiple of {multiple} for {name}",
                                    f"use {max(multiple, size // multiple * multiple)}")
    for field, value in values.items():
        if value is None:
            continue
        for node_id, input_name in fields[field]:
            workflow[node_id]["inputs"][input_name] = value
    return workflow


def _widget_names(node_info):
    """Inputs shown as widgets, in the order the UI stores their values (required, then optional)."""
    names = []
    order = node_info.get("input_order", {})
    for section in ("required", "optional"):
        specs = node_info["input"].get(section, {})
        for input_name in order.get(section, list(specs)):
            spec = specs[input_name]
            kind = spec[0]
            if isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"):
                names.append((input_name, spec))
    return names


def _has_seed_control(spec):
    options = spec[1] if len(spec) > 1 else {}
    return bool(options.get("control_after_generate"))


DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"  # V3 schema (0.33: SaveVideo's format, with its codec nested inside)


def _assign_widget_values(sections, order, values, position, inputs, prefix=""):
    """Hand the UI's positional widget values to input names, as the front end does.

    A V3 dynamic combo is a widget whose chosen option brings its own widgets, named
    '<combo>.<input>' in the API prompt (0.33's SaveVideo: format, then format.codec).
    Returns the position after the last value used.
    """
    for section in ("required", "optional"):
        specs = sections.get(section, {})
        for input_name in order.get(section, list(specs)):
            spec = specs[input_name]
            options = spec[1] if len(spec) > 1 else {}
            kind = spec[0]
            is_widget = isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", DYNAMIC_COMBO)
            if not is_widget or options.get("hidden") or position >= len(values):
                continue
            value = values[position]
            inputs[prefix + input_name] = value
            position += 1
            if kind == DYNAMIC_COMBO:
                chosen = next((option for option in options.get("options", []) if option["key"] == value), None)
                if chosen is not None:
                    position = _assign_widget_values(chosen.get("inputs", {}), {}, values, position, inputs,
                                                     prefix + input_name + ".")
            elif _has_seed_control(spec) and position < len(values) and values[position] in SEED_CONTROL_VALUES:
                position += 1
    return position


def ui_to_api(ui_workflow, object_info):
    """Convert a UI-format workflow to API format, as the front end does when it queues it."""
    nodes = {node["id"]: node for node in ui_workflow["nodes"]}
    links = {link[0]: link for link in ui_workflow["links"]}
    api = {}
    for node_id, node in sorted(nodes.items()):
        if node["type"] in FRONTEND_ONLY_NODES or node.get("mode", 0) in (2, 4):  # muted / bypassed
            continue
        if node["type"] not in object_info:
            raise WorkflowError(f"node {node_id} has type {node['type']!r}, which this server does not have. "
                                "Fix: install the custom node package that provides it, or update ComfyUI.")
        info = object_info[node["type"]]
        inputs = {}
        _assign_widget_values(info["input"], info.get("input_order", {}), list(node.get("widgets_values") or []), 0,
                              inputs)
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                link = links[slot["link"]]
                inputs[slot["name"]] = [str(link[1]), link[2]]
        api[str(node_id)] = {"class_type": node["type"], "inputs": inputs}
    return api


def api_to_ui(api_workflow, object_info, positions=None, properties=None, notes=(), groups=(), sizes=None,
              view=None):
    """Lay an API workflow out as a UI workflow (used to build the shipped UI files).

    notes: (markdown, (x, y)[, (width, height)]); view: the initial {"scale", "offset"}."""
    positions = positions or {}
    sizes = sizes or {}
    properties = properties or {}
    ui_nodes, ui_links = [], []
    outgoing = {}
    link_id = 0
    for node_id in sorted(api_workflow, key=int):
        for input_name, value in api_workflow[node_id]["inputs"].items():
            if isinstance(value, list):
                link_id += 1
                source_id, source_slot = value
                outgoing.setdefault((source_id, source_slot), []).append(link_id)
                ui_links.append([link_id, int(source_id), source_slot, int(node_id), input_name, None])
    link_by_target = {(link[3], link[4]): link for link in ui_links}
    for order, node_id in enumerate(sorted(api_workflow, key=int)):
        node = api_workflow[node_id]
        info = object_info[node["class_type"]]
        widget_names = dict(_widget_names(info))
        widgets_values = []
        for input_name, spec in _widget_names(info):
            value = node["inputs"].get(input_name)
            if isinstance(value, list) or value is None:
                value = _default(spec)
            widgets_values.append(value)
            if _has_seed_control(spec):
                widgets_values.append("fixed")
        inputs = []
        all_specs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        ordered = info.get("input_order", {}).get("required", []) + info.get("input_order", {}).get("optional", [])
        for slot_index, input_name in enumerate(ordered):
            spec = all_specs[input_name]
            is_widget = input_name in widget_names
            link = link_by_target.get((int(node_id), input_name))
            if is_widget and link is None:
                continue
            entry = {"name": input_name, "type": spec[0] if not isinstance(spec[0], list) else "COMBO",
                     "link": link[0] if link else None}
            if is_widget:
                entry["widget"] = {"name": input_name}
            inputs.append(entry)
        outputs = []
        for slot, output_type in enumerate(info["output"]):
            outputs.append({"name": info["output_name"][slot], "type": output_type,
                            "links": outgoing.get((node_id, slot), []), "slot_index": slot})
        node_properties = {"Node name for S&R": node["class_type"]}
        node_properties.update(properties.get(node_id, {}))
        x, y = positions.get(node_id, (40 + 340 * (order % 5), 60 + 260 * (order // 5)))
        ui_nodes.append({"id": int(node_id), "type": node["class_type"], "pos": [x, y],
                         "size": list(sizes.get(node_id, (320, 160))),
                         "flags": {}, "order": order, "mode": 0, "inputs": inputs, "outputs": outputs,
                         "properties": node_properties, "widgets_values": widgets_values})
    # fill link target slots and types now that input slot indexes are known
    slot_index = {(node["id"], entry["name"]): index for node in ui_nodes for index, entry in enumerate(node["inputs"])}
    node_outputs = {node["id"]: node["outputs"] for node in ui_nodes}
    for link in ui_links:
        link[5] = node_outputs[link[1]][link[2]]["type"]
        link[4] = slot_index[(link[3], link[4])]
    next_id = max(int(node_id) for node_id in api_workflow) + 1
    for offset, (text, (x, y), *size) in enumerate(notes):
        ui_nodes.append({"id": next_id + offset, "type": "MarkdownNote", "pos": [x, y],
                         "size": list(size[0]) if size else [420, 300],
                         "flags": {}, "order": len(ui_nodes), "mode": 0, "inputs": [], "outputs": [],
                         "properties": {}, "widgets_values": [text], "color": "#432", "bgcolor": "#653"})
    return {"last_node_id": max(node["id"] for node in ui_nodes), "last_link_id": link_id, "nodes": ui_nodes,
            "links": ui_links, "groups": list(groups), "config": {},
            "extra": {"ds": dict(view) if view else {"scale": 0.7, "offset": [0, 0]}},
            "version": 0.4}


def _default(spec):
    kind = spec[0]
    options = spec[1] if len(spec) > 1 else {}
    if "default" in options:
        return options["default"]
    if isinstance(kind, list):
        return kind[0] if kind else ""
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(kind)


def substitute_files(workflow, replacements):
    """A copy with every input value found in `replacements` swapped (e.g. official file -> fixture)."""
    workflow = copy.deepcopy(workflow)
    for node in workflow.values():
        for input_name, value in node["inputs"].items():
            if isinstance(value, str) and value in replacements:
                node["inputs"][input_name] = replacements[value]
    return workflow


def _input_spec(info, input_name):
    for section in ("required", "optional"):
        if input_name in info["input"].get(section, {}):
            return info["input"][section][input_name]
    return None


def _types_match(output_type, input_type):
    if output_type == "*" or input_type == "*":
        return True
    outputs, inputs = set(str(output_type).split(",")), set(str(input_type).split(","))
    return bool(outputs & inputs)


def validate_api_workflow(workflow, object_info, file_inputs_ok=lambda class_type, input_name, value: False):
    """Every problem /prompt would find, statically: unknown node types, unknown or missing inputs,
    links to missing nodes or of the wrong type, values out of range or not among a combo's choices.

    file_inputs_ok(class_type, input_name, value) may accept combo values that name model files the
    checking server does not have (the shipped workflows name the official files).
    """
    problems = []
    for node_id, node in workflow.items():
        class_type = node.get("class_type")
        if class_type not in object_info:
            problems.append(f"node {node_id}: unknown node type {class_type!r}")
            continue
        info = object_info[class_type]
        for input_name in info["input"].get("required", {}):
            if input_name not in node["inputs"]:
                problems.append(f"node {node_id} ({class_type}): required input {input_name!r} is missing")
        for input_name, value in node["inputs"].items():
            spec = _input_spec(info, input_name)
            where = f"node {node_id} ({class_type}).{input_name}"
            if spec is None:
                problems.append(f"{where}: no such input")
                continue
            kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
            if isinstance(value, list):
                source_id, slot = value
                source = workflow.get(str(source_id))
                if source is None:
                    problems.append(f"{where}: links to missing node {source_id}")
                    continue
                outputs = object_info.get(source["class_type"], {}).get("output", [])
                if slot >= len(outputs):
                    problems.append(f"{where}: links to output {slot} of {source['class_type']}, which has {len(outputs)}")
                elif not _types_match(outputs[slot], "COMBO" if isinstance(kind, list) else kind):
                    problems.append(f"{where}: expects {kind}, linked to {outputs[slot]} from node {source_id}")
                continue
            if isinstance(kind, list) or kind == "COMBO":
                choices = kind if isinstance(kind, list) else options.get("options", [])
                if value not in choices and not file_inputs_ok(class_type, input_name, value):
                    problems.append(f"{where}: {value!r} is not one of the choices")
            elif kind == "INT":
                if not isinstance(value, int) or isinstance(value, bool):
                    problems.append(f"{where}: expects an integer, got {value!r}")
                elif not options.get("min", value) <= value <= options.get("max", value):
                    problems.append(f"{where}: {value} outside [{options.get('min')}, {options.get('max')}]")
            elif kind == "FLOAT":
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    problems.append(f"{where}: expects a number, got {value!r}")
                elif not options.get("min", value) <= value <= options.get("max", value):
                    problems.append(f"{where}: {value} outside [{options.get('min')}, {options.get('max')}]")
            elif kind == "BOOLEAN" and not isinstance(value, bool):
                problems.append(f"{where}: expects true/false, got {value!r}")
            elif kind == "STRING" and not isinstance(value, str):
                problems.append(f"{where}: expects text, got {value!r}")
    return problems
