"""What saved workflows rely on in WanFit's /object_info: the comparable part of each node's entry.

A workflow saved in the editor stores widget values by position and links by slot, so what must not
change is: input names, kinds, options and order; outputs and their names; category, display name and
whether a node is an output node. Tooltips and descriptions are prose and may change. Both spellings of
a dropdown the server uses are read as one: a V1 list `[[a, b], {...}]` and the V3 `["COMBO", {"options":
[a, b], "multiselect": false}]`. File dropdowns list whatever the model folders hold, so they compare
by name only.

    python tests/host/node_contract.py --core ~/ComfyUI-0.33.0 --out tests/host/object_info_v1.json

starts a real server on that core (run it with that core's venv) and records its answer in the file,
keyed by core version (the file holds one entry per core).
"""

import argparse
import json
from pathlib import Path
import re
import sys
import tempfile

FIXTURE = Path(__file__).resolve().with_name("object_info_v1.json")
# dropdowns filled from the model and output folders: their choices depend on the files present
FILE_INPUTS = ("model_name", "high_noise_model", "low_noise_model", "clip_name", "vae_name", "latent", "model_file")
LISTED_FILES = "<files in the folder>"
NODE_KEYS = ("name", "display_name", "category", "output_node", "output", "output_is_list", "output_name",
             "python_module")
FLAGS = ("deprecated", "experimental")  # V1 leaves them out (null), V3 says false
PROSE = ("tooltip",)


def input_spec(name, spec):
    """[kind, options] with a dropdown as ["COMBO", {"options": [...]}] and no prose."""
    kind, options = spec[0], dict(spec[1]) if len(spec) > 1 else {}
    if isinstance(kind, list):
        kind, options["options"] = "COMBO", kind
    if kind == "COMBO" and options.get("multiselect") is False:
        del options["multiselect"]
    if kind == "COMBO" and name in FILE_INPUTS:
        options["options"] = LISTED_FILES
    return [kind, {key: value for key, value in options.items() if key not in PROSE}]


def node_contract(info):
    """The part of one node's /object_info entry that saved workflows and the front end rely on."""
    contract = {key: info.get(key) for key in NODE_KEYS}
    contract.update({flag: bool(info.get(flag)) for flag in FLAGS})
    contract["input"] = {section: {name: input_spec(name, spec) for name, spec in info["input"].get(section, {}).items()}
                         for section in ("required", "optional") if section in info["input"]}
    contract["input_order"] = {section: list(info["input_order"][section])
                               for section in ("required", "optional") if section in info.get("input_order", {})}
    contract["hidden"] = sorted(info["input"].get("hidden", {}))
    return contract


def wanfit_contracts(object_info):
    """{node id: contract} for every shipped WanFit node (the test-only nodes left out)."""
    return {name: node_contract(info) for name, info in sorted(object_info.items())
            if name.startswith("WanFit") and not info.get("category", "").endswith("testing")}


def core_version(comfyui_path):
    text = (Path(comfyui_path) / "comfyui_version.py").read_text(encoding="utf-8")
    return re.search(r'__version__\s*=\s*"([^"]+)"', text).group(1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--core", required=True, help="ComfyUI checkout to start")
    parser.add_argument("--out", default=str(FIXTURE))
    args = parser.parse_args(argv)
    repo = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(repo))
    from tests.fixtures.generate import ensure_fixtures, fixture_dir
    from tests.host.server import ComfyServer
    from wanfit.client import ComfyClient

    ensure_fixtures(args.core)
    with tempfile.TemporaryDirectory() as work:
        server = ComfyServer(args.core, fixture_dir(), Path(work)).start()
        try:
            answer = ComfyClient(server.url, request_timeout_s=120).object_info()
        finally:
            server.stop()
    out = Path(args.out)
    recorded = json.loads(out.read_text(encoding="utf-8")) if out.exists() else {}
    recorded[core_version(args.core)] = wanfit_contracts(answer)
    out.write_text(json.dumps(dict(sorted(recorded.items())), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"{out}: {len(recorded[core_version(args.core)])} nodes for ComfyUI {core_version(args.core)}")


if __name__ == "__main__":
    main()
