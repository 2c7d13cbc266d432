"""Run one matrix check against one ComfyUI release, in this process, and print one JSON line.

    python tests/matrix/run_check.py --core ~/ComfyUI-0.21.0 --check launch_flags

ComfyUI's `comfy` package imports once per process, so tests/matrix/test_releases.py starts this
script afresh for every (release, check). It puts the release's overlay folder (see OVERLAY_ROOT)
and then its checkout at the front of sys.path, and forces --cpu before comfy.model_management
is imported. The JSON line: {"check", "core", "version", "outcome": "passed" | "failed" |
"skipped", "message", "details", "seconds"}; the exit status is 0 whatever the outcome (1 only
when this script itself is misused).

Adding a check: write `def check_<name>(release)` below and add it to CHECKS. It returns a
`details` dict when the check holds, raises `CheckFailed(message, details)` when it does not,
and calls `release.require(...)` for the comfy modules it needs: a module this venv cannot
import skips the check with a message that says why (the `imports` check fails on it instead).
"""

import argparse
import contextlib
import importlib
import io
import json
import os
from pathlib import Path
import re
import resource
import sys
import time
import traceback

REPO = Path(__file__).resolve().parents[2]
# Per-release packages put in front of the venv's own, outside the repository: where a release
# needs another comfy-kitchen / comfy-aimdo than ComfyUI 0.33.0's venv has, `pip install --target
# <OVERLAY_ROOT>/<version> 'comfy-aimdo==X'` (no release in tests/matrix/releases.txt needs one now).
OVERLAY_ROOT = Path(os.environ.get("WANFIT_MATRIX_OVERLAY_ROOT") or Path.home() / ".cache/wanfit/matrix-overlay")
# The comfy modules WanFit touches (planner, lean forward, decode, loaders).
COMFY_MODULES = ("comfy.model_management", "comfy.ops", "comfy.ldm.wan.model", "comfy.ldm.wan.vae",
                 "comfy.ldm.wan.vae2_2", "comfy.sd")
PINNED = ("comfy-kitchen", "comfy-aimdo")  # pins that differ between releases (their requirements.txt)


class CheckFailed(Exception):
    def __init__(self, message, details=None):
        super().__init__(message)
        self.details = details or {}


class Unavailable(Exception):
    """A comfy module the check needs does not import in this venv."""


def _version_of(root):
    match = re.search(r'__version__\s*=\s*"([^"]+)"', (root / "comfyui_version.py").read_text(encoding="utf-8"))
    return match.group(1) if match else "?"


def _installed(distribution, overlay=None):
    """The version of `distribution` this process imports: from the overlay when it holds one."""
    from importlib import metadata

    if overlay is not None and overlay.is_dir():
        found = list(metadata.distributions(name=distribution, path=[str(overlay)]))
        if found:
            return found[0].version
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _meets(requirement_line, version):
    """Whether `version` satisfies a requirements.txt line; None when that cannot be told."""
    try:
        from packaging.requirements import Requirement
    except ImportError:
        return None
    try:
        return version is not None and Requirement(requirement_line).specifier.contains(version, prereleases=True)
    except Exception:
        return None


class Release:
    """One ComfyUI checkout, imported into this process on demand."""

    def __init__(self, path):
        self.path = Path(os.path.expanduser(str(path))).resolve()
        self.version = _version_of(self.path)
        self.overlay = OVERLAY_ROOT / self.version
        self._imported = False
        self.import_errors = {}

    def pins(self):
        """{distribution: its line in the release's requirements.txt} for PINNED."""
        found = {}
        requirements = self.path / "requirements.txt"
        for line in requirements.read_text(encoding="utf-8").splitlines() if requirements.is_file() else ():
            name = re.split(r"[<>=!~ ;\[]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")
            if name in PINNED:
                found[name] = line.strip()
        return found

    def environment(self):
        """What this venv brings for the pinned packages, and the overlay in front of it."""
        pins = self.pins()
        installed = {name: _installed(name, self.overlay) for name in PINNED}
        return {"pins": pins, "installed": installed,
                "pins_unmet": sorted(name for name, line in pins.items() if _meets(line, installed[name]) is False),
                "overlay": str(self.overlay) if self.overlay.is_dir() else None}

    def add_to_path(self):
        if not self._imported:
            for folder in (self.path, self.overlay):  # the overlay ends up first
                if folder.is_dir() and str(folder) not in sys.path:
                    sys.path.insert(0, str(folder))
            self._imported = True

    def cli_args(self):
        """comfy.cli_args with its args parsed from [] (comfy.options keeps argument parsing off)."""
        self.add_to_path()
        import comfy.options  # noqa: F401  (args_parsing stays False: cli_args parses [] instead of sys.argv)
        import comfy.cli_args

        return comfy.cli_args

    def require(self, *modules):
        """Import comfy modules (after forcing --cpu); Unavailable names the first that fails and why."""
        self.cli_args().args.cpu = True  # before comfy.model_management probes a GPU
        loaded = []
        for name in ("comfy.model_management", *modules):
            if name in self.import_errors:
                raise Unavailable(self.import_errors[name])
            try:
                loaded.append(importlib.import_module(name))
            except Exception as error:  # ImportError, but also a pinned package's API that moved
                self.import_errors[name] = self.explain(name, error)
                raise Unavailable(self.import_errors[name]) from error
        return loaded[1:] if modules else loaded

    def explain(self, module, error):
        environment = self.environment()
        pins = ", ".join(f"{line!r} (here: {environment['installed'][name] or 'not installed'})"
                         for name, line in environment["pins"].items()) or "no comfy-kitchen/comfy-aimdo pin"
        overlay = f"overlay {environment['overlay']} in front" if environment["overlay"] else \
            f"no overlay at {self.overlay}"
        return (f"{module} of ComfyUI {self.version} does not import with this venv ({sys.prefix}; "
                f"{overlay}): {type(error).__name__}: {error}. Its requirements.txt pins {pins}. "
                f"Fix: give this release the package it pins in an overlay, e.g. "
                f"python -m pip install --target {self.overlay} '<its pin>' (tests/matrix/run_check.py, OVERLAY_ROOT)")


# --- checks ------------------------------------------------------------------------------------


def check_imports(release):
    """Every comfy module WanFit touches imports in this venv (with this release's overlay)."""
    release.cli_args().args.cpu = True
    imported, failed = [], {}
    for name in COMFY_MODULES:
        try:
            release.require(name)
            imported.append(name)
        except Unavailable as error:
            failed[name] = str(error)
    details = {"imported": imported, "failed": sorted(failed), **release.environment()}
    if failed:
        first = next(iter(failed.values()))
        raise CheckFailed(f"{len(failed)} of {len(COMFY_MODULES)} modules do not import: {sorted(failed)}. "
                          f"First: {first}", details)
    return details


NEVER_ON_DYNAMIC_VRAM = {"--lowvram", "--novram", "--highvram", "--gpu-only"}
RAM_GB = (32, 64, 256)  # 32 GB drops models (cache flags), 64/256 GB keep them (tests/host/test_launch_flags.py)


_planned = []  # the Plan objects the command built, newest last


def _wanfit_plan(*argv):
    """`python -m wanfit plan ARGV` in this process: (exit status, stdout, stderr, the Plan or None)."""
    import functools

    from wanfit import core as cores
    from wanfit.cli import plan as plan_command

    if not hasattr(cores.core_from_checkout, "cache_info"):  # the checkout does not change during a check
        cores.core_from_checkout = functools.lru_cache(maxsize=None)(cores.core_from_checkout)
    if not hasattr(plan_command.plan_from_options, "records"):
        planner = plan_command.plan_from_options

        def recording(*args, **kwargs):
            result = planner(*args, **kwargs)
            _planned.append(result)
            return result

        recording.records = True
        plan_command.plan_from_options = recording
    _planned.clear()
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = plan_command.main(list(argv))
    return status, out.getvalue(), err.getvalue(), (_planned[-1] if _planned else None)


def _real_dynamic_vram(release, cli_args):
    """The release's own enables_dynamic_vram() for a launch without flags, with ModelPatcherDynamic present."""
    function = getattr(cli_args, "enables_dynamic_vram", None)
    if function is None:
        return False
    patcher = (release.path / "comfy" / "model_patcher.py").read_text(encoding="utf-8")
    return bool(function()) and re.search(r"^class ModelPatcherDynamic\b", patcher, re.M) is not None


def _real_ram_cache_default(release):
    """Whether the release's main.py starts prompt_worker from the RAM-pressure cache (its first cache_type line)."""
    main = (release.path / "main.py").read_text(encoding="utf-8")
    found = re.search(r"^\s+cache_type = execution\.CacheType\.(\w+)", main, re.M)
    return bool(found) and found.group(1) == "RAM_PRESSURE"


def check_launch_flags(release):
    """Every `wanfit plan --print-args --core <release>` line passes the release's real parser."""
    from wanfit.core import core_from_checkout
    from wanfit.plan import GPU_TIERS, MODEL_VARIANTS

    cli_args = release.cli_args()
    parser = cli_args.parser
    options = {option for option in parser._option_string_actions if option.startswith("--") and option != "--help"}
    core = core_from_checkout(release.path)
    problems, lines, refused, dropping = [], {}, [], set()
    for tier in GPU_TIERS:
        for model in MODEL_VARIANTS:
            for ram_gb in RAM_GB:
                key = f"{tier} {model} {ram_gb} GB"
                status, out, err, result = _wanfit_plan("--print-args", "--core", str(release.path), "--tier", tier,
                                                        "--model", model, "--system-ram-gb", str(ram_gb))
                if status == 2 and "does not fit" in err:
                    refused.append(key)
                    continue
                if status != 0 or len(out.strip().splitlines()) != 1:
                    problems.append(f"{key}: wanfit plan exited {status}, stdout {out!r}, stderr {err.strip()!r}")
                    continue
                lines[key] = out.strip()
                if result is not None and result.drop_text_encoder_after_encode:
                    dropping.add(key)
    if len(lines) < len(GPU_TIERS) * len(MODEL_VARIANTS):
        problems.append(f"only {len(lines)} of {len(GPU_TIERS) * len(MODEL_VARIANTS) * len(RAM_GB)} plans produced "
                        f"a line (refused as not fitting: {refused})")

    for line in sorted(set(lines.values())):
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                parser.parse_args(line.split())
        except SystemExit as exit:
            keys = [key for key, value in lines.items() if value == line]
            problems.append(f"ComfyUI {release.version}'s parser rejects {line!r} (exit {exit.code}: "
                            f"{err.getvalue().strip().splitlines()[-1:]}) planned for {keys}")
    for key, line in lines.items():
        unknown = [item for item in line.split() if item.startswith("--") and item not in options]
        if unknown:
            problems.append(f"{key}: {line!r} uses {unknown}, which ComfyUI {release.version} does not define")

    if core.flags != options:
        problems.append(f"wanfit.core read the flags of {release.path} wrong: only in the static reading "
                        f"{sorted(core.flags - options)}, only in the real parser {sorted(options - core.flags)}")
    real_dynamic = _real_dynamic_vram(release, cli_args)
    real_ram_cache = _real_ram_cache_default(release)
    if getattr(core, "ram_cache_default_on", False) != real_ram_cache:
        problems.append(f"wanfit.core says ComfyUI {release.version}'s default node cache is "
                        f"{'RAM-pressure' if not real_ram_cache else 'classic'}; its main.py says "
                        f"{'RAM-pressure' if real_ram_cache else 'classic'}")
    if core.dynamic_vram != real_dynamic:
        problems.append(f"wanfit.core says dynamic VRAM is {'on' if core.dynamic_vram else 'off'} by default on "
                        f"ComfyUI {release.version}; its own enables_dynamic_vram() without flags says "
                        f"{'on' if real_dynamic else 'off'}")
    for key, line in lines.items():
        items = set(line.split())
        if real_dynamic:
            fighting = sorted(NEVER_ON_DYNAMIC_VRAM & items)
            if fighting:
                problems.append(f"{key}: {line!r} has {fighting}, which fight (or switch off) dynamic VRAM, on by "
                                f"default on ComfyUI {release.version}")
        if core.async_offload_default_on and "--async-offload" in items:
            problems.append(f"{key}: {line!r} has --async-offload, already on by default on ComfyUI {release.version}")
        if key in dropping and not real_ram_cache and not items & {"--cache-ram", "--cache-none"}:
            problems.append(f"{key}: {line!r} names no cache flag, but ComfyUI {release.version}'s default classic "
                            "cache would keep the models the plan drops")
    if not real_dynamic and not any("--lowvram" in line.split() for line in lines.values()):
        problems.append(f"no line has --lowvram, which partial loading on ComfyUI {release.version} still uses")

    details = {"lines": len(lines), "distinct_lines": len(set(lines.values())), "refused": len(refused),
               "dropping_models": len(dropping),
               "dynamic_vram": real_dynamic, "ram_cache_default_on": real_ram_cache,
               "async_offload_default_on": core.async_offload_default_on, "flags": len(options),
               "examples": dict(sorted(lines.items())[:3])}
    if problems:
        raise CheckFailed(f"{len(problems)} problem(s): " + " | ".join(problems[:8]), details)
    return details


def check_lean_forward(release):
    """WanFit Lean Forward (mode on) passes its check against this release's block and equals it."""
    import replay_checks

    return replay_checks.check_lean_forward(release, failed=CheckFailed)


def check_lean_forward_formats(release):
    """WanFit Lean Forward (mode on) on each quantized format this release has equals its blocks exactly."""
    import replay_checks

    return replay_checks.check_lean_forward_formats(release, failed=CheckFailed)


def check_decode_wan21(release):
    """WanFit VAE Decode (mode on), Wan 2.1 VAE, 2x2 exact tiles: its self-check passes, equals VAE.decode."""
    import replay_checks

    return replay_checks.check_decode(release, "wan21", failed=CheckFailed)


def check_decode_wan22(release):
    """WanFit VAE Decode (mode on), Wan 2.2 VAE: its self-check at 2x2 exact tiles passes, equals VAE.decode."""
    import replay_checks

    return replay_checks.check_decode(release, "wan22", failed=CheckFailed)


def check_node_schemas(release):
    """Every WanFit node's V3 schema builds on this release, and the shipped workflows' widget values fit it."""
    import node_schemas

    return node_schemas.check(release, failed=CheckFailed)


# name -> function(release) -> details; tests/matrix/test_releases.py runs each against each release (the
# decode checks against the releases tests/matrix/releases.txt marks "decode"). check_imports runs on
# demand (--check imports): every other check fails naming the module a release cannot import.
ON_DEMAND = {"imports": check_imports}
DECODE_CHECKS = ("decode_wan21", "decode_wan22")
CHECKS = {
    "node_schemas": check_node_schemas,
    "launch_flags": check_launch_flags,
    "lean_forward": check_lean_forward,
    "lean_forward_formats": check_lean_forward_formats,
    "decode_wan21": check_decode_wan21,
    "decode_wan22": check_decode_wan22,
}


def run(core, check):
    release = Release(core)
    started = time.monotonic()
    result = {"check": check, "core": str(release.path), "version": release.version}
    try:
        details = {**CHECKS, **ON_DEMAND}[check](release)
        result.update(outcome="passed", message="", details=details or {})
    except CheckFailed as failure:
        result.update(outcome="failed", message=str(failure), details=failure.details)
    except Unavailable as unavailable:  # every release in the matrix must import what WanFit touches
        result.update(outcome="failed", message=str(unavailable), details=release.environment())
    except Exception as error:  # a check that crashed: say where
        result.update(outcome="failed", message=f"{type(error).__name__}: {error}",
                      details={"traceback": traceback.format_exc()[-4000:]})
    result["seconds"] = round(time.monotonic() - started, 2)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 2)  # the whole process, imports included
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--core", required=True, help="a ComfyUI checkout, e.g. ~/ComfyUI-0.21.0")
    parser.add_argument("--check", required=True, choices=sorted({**CHECKS, **ON_DEMAND}))
    args = parser.parse_args(argv)
    if not (Path(os.path.expanduser(args.core)) / "comfyui_version.py").is_file():
        parser.error(f"{args.core} holds no comfyui_version.py: not a ComfyUI checkout")
    if not sys.pycache_prefix:  # compiled modules go outside the checkout (the tests write into none)
        sys.pycache_prefix = str(Path.home() / ".cache/wanfit/pycache")
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # no GPU probing, whatever this machine has
    os.environ.pop("GPU_TIER", None)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    result = run(args.core, args.check)
    sys.stdout.flush()
    print(json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
