"""Which ComfyUI core a plan is for: its version, its launch flags, its memory manager.

Launch flags and memory management moved between the supported cores (0.3.64 and 0.33.0):
0.33 runs diffusion models through dynamic VRAM (comfy-aimdo) on NVIDIA by default, where
`--lowvram` does nothing and `--novram` / `--highvram` / `--gpu-only` switch dynamic VRAM off.
The planner must therefore know the core before it emits a flag. A `Core` comes from a
checkout on disk (read statically, ComfyUI is never imported), from a version string (a
built-in table), or from the running ComfyUI process (imported there, inside the function).
"""

import ast
from dataclasses import dataclass, field
import os
from pathlib import Path
import re
import sys

from .errors import WanFitError

MINIMUM_VERSION = (0, 3, 64)
NEWEST_VERSION = (0, 33, 0)

# `add_argument` flags of comfy/cli_args.py, read with `flags_from_cli_args` (tests check the
# table against each checkout). 0.33.0 = 0.3.64 - removed + added.
_FLAGS_0_3_64 = frozenset("""
--listen --port --tls-keyfile --tls-certfile --enable-cors-header --max-upload-size --base-directory
--extra-model-paths-config --output-directory --temp-directory --input-directory --auto-launch
--disable-auto-launch --cuda-device --default-device --cuda-malloc --disable-cuda-malloc --force-fp32
--force-fp16 --fp32-unet --fp64-unet --bf16-unet --fp16-unet --fp8_e4m3fn-unet --fp8_e5m2-unet
--fp8_e8m0fnu-unet --fp16-vae --fp32-vae --bf16-vae --cpu-vae --fp8_e4m3fn-text-enc --fp8_e5m2-text-enc
--fp16-text-enc --fp32-text-enc --bf16-text-enc --force-channels-last --directml --oneapi-device-selector
--disable-ipex-optimize --supports-fp8-compute --preview-method --preview-size --cache-classic --cache-lru
--cache-none --use-split-cross-attention --use-quad-cross-attention --use-pytorch-cross-attention
--use-sage-attention --use-flash-attention --disable-xformers --force-upcast-attention
--dont-upcast-attention --gpu-only --highvram --normalvram --lowvram --novram --cpu --reserve-vram
--async-offload --force-non-blocking --default-hashing-function --disable-smart-memory --deterministic
--fast --mmap-torch-files --disable-mmap --dont-print-server --quick-test-for-ci
--windows-standalone-build --disable-metadata --disable-all-custom-nodes --whitelist-custom-nodes
--disable-api-nodes --multi-user --verbose --log-stdout --front-end-version --front-end-root
--user-directory --enable-compress-response-body --comfy-api-base --database-url
""".split())
_FLAGS_0_33_0 = (_FLAGS_0_3_64 - {"--disable-ipex-optimize", "--normalvram"}) | frozenset("""
--fp16-intermediates --enable-triton-backend --disable-triton-backend --cache-ram --high-ram
--use-ck-attention --enable-manager --disable-manager-ui --enable-manager-legacy-ui --vram-headroom
--disable-nvml-pressure --disable-async-offload --disable-dynamic-vram --enable-dynamic-vram --fast-disk
--disable-cuda-graphs --debug-hang --disable-pinned-memory --models-directory --enable-assets
--enable-asset-hashing --feature-flag --list-feature-flags
""".split())

# version -> (flags, dynamic VRAM on by default on NVIDIA with torch >= 2.8, RAM-pressure cache by default).
# Only a hint for a version string: a checkout is always read for its own facts (core_from_checkout).
KNOWN_CORES = {
    (0, 3, 64): (_FLAGS_0_3_64, False, False),
    (0, 33, 0): (_FLAGS_0_33_0, True, True),
}

DYNAMIC_VRAM_MIN_TORCH = (2, 8)  # main.py falls back to the classic ModelPatcher below it


class CoreNotSupportedError(WanFitError):
    """The core is older than the oldest supported one, or no core is where one was named."""


@dataclass(frozen=True)
class Core:
    version: tuple  # (0, 33, 0)
    source: str  # where the facts came from: a checkout, the running process, a version string
    flags: frozenset = field(repr=False, default=frozenset())  # every launch flag its comfy/cli_args.py defines
    dynamic_vram: bool = False  # ships dynamic VRAM (comfy-aimdo), on by default on NVIDIA with torch >= 2.8
    ram_cache_default_on: bool = False  # its node cache is the RAM-pressure cache unless a flag picks another
    dynamic_vram_active: bool = None  # the running process only: whether it is on now (None: ahead of time)
    note: str = ""  # e.g. an unknown version planned as the nearest older known one

    @property
    def version_text(self):
        return format_version(self.version)

    @property
    def async_offload_default_on(self):
        """0.33 enables async weight offload on NVIDIA by itself (it grew --disable-async-offload)."""
        return "--disable-async-offload" in self.flags

    def has_flag(self, flag):
        return flag in self.flags

    def describe(self):
        text = f"ComfyUI {self.version_text} ({self.source})"
        return f"{text}; {self.note}" if self.note else text


def format_version(version):
    return ".".join(str(part) for part in version)


def parse_version(text):
    """'0.33.0' / 'v0.3.64' -> (0, 33, 0); None when it is not a version."""
    match = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.(\d+))?", str(text).strip())
    if not match:
        return None
    return tuple(int(part or 0) for part in match.groups())


def looks_like_version(text):
    return parse_version(text) is not None


def _check_minimum(version, where):
    if version < MINIMUM_VERSION:
        raise CoreNotSupportedError(
            f"ComfyUI {format_version(version)} ({where}) is older than the oldest core WanFit supports, "
            f"{format_version(MINIMUM_VERSION)}. Fix: update ComfyUI to {format_version(MINIMUM_VERSION)} or newer "
            f"(tested: {', '.join(format_version(v) for v in KNOWN_CORES)}).")


def _nearest_known(version):
    """The newest known core not newer than `version` (the caller checked the minimum)."""
    return max(known for known in KNOWN_CORES if known <= version)


def core_from_version(text, source=None):
    """A core from its version string, with flags from the built-in table.

    A version between the known ones (or newer than the newest) is planned as the nearest
    older known core, and `note` says so.
    """
    version = parse_version(text)
    if version is None:
        raise CoreNotSupportedError(f"core={text!r} is neither a ComfyUI version (e.g. 0.33.0) nor a checkout "
                                    "folder. Fix: pass a version such as 0.33.0 or the path of a ComfyUI checkout.")
    _check_minimum(version, source or f"version {text}")
    known = _nearest_known(version)
    flags, dynamic, ram_cache = KNOWN_CORES[known]
    note = ""
    if known != version:
        note = (f"{format_version(version)} is not a tested core: planned with the flags of "
                f"{format_version(known)}, the nearest older tested one")
    return Core(version=version, source=source or f"version {text}", flags=flags, dynamic_vram=dynamic,
                ram_cache_default_on=ram_cache, note=note)


def newest_core():
    """The newest supported core: what `plan()` assumes when no core is given."""
    return core_from_version(format_version(NEWEST_VERSION), source="newest supported core, assumed")


# --- a checkout on disk (static reading, no import) ----------------------------


def _tree(source):
    return source if isinstance(source, ast.AST) else ast.parse(source)


def flags_from_cli_args(source):
    """Every '--flag' passed to an `add_argument(...)` call in cli_args.py (source text or its parsed tree)."""
    flags = set()
    for node in ast.walk(_tree(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "add_argument"):
            for argument in node.args:
                if isinstance(argument, ast.Constant) and isinstance(argument.value, str) \
                        and argument.value.startswith("--"):
                    flags.add(argument.value)
    return frozenset(flags)


def _version_from_file(path):
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets) \
                and isinstance(node.value, ast.Constant):
            return str(node.value.value)
    return ""


def _defines(source, kind, name):
    return any(isinstance(node, kind) and node.name == name for node in ast.walk(ast.parse(source)))


class _Unreadable(Exception):
    """The function uses a construct the static reading below does not evaluate."""


_OFF_SETTING = ()  # every `args.<dest>` at start-up without flags: false, and empty for `x in args.fast`


def _value_without_flags(node):
    """An expression of cli_args.py evaluated for a launch without flags (`args.x` off, enum members opaque)."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return _OFF_SETTING if node.value.id == "args" else f"{node.value.id}.{node.attr}"
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return not _value_without_flags(node.operand)
    if isinstance(node, ast.BoolOp):
        values = (_value_without_flags(value) for value in node.values)
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.Compare) and len(node.ops) == 1:
        left, right = _value_without_flags(node.left), _value_without_flags(node.comparators[0])
        compare = {ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b, ast.Is: lambda a, b: a is b,
                   ast.IsNot: lambda a, b: a is not b, ast.Eq: lambda a, b: a == b,
                   ast.NotEq: lambda a, b: a != b}.get(type(node.ops[0]))
        if compare is not None:
            return compare(left, right)
    raise _Unreadable(ast.dump(node)[:200])


def _returns_without_flags(statements):
    for statement in statements:
        if isinstance(statement, ast.Return):
            return bool(_value_without_flags(statement.value)) if statement.value is not None else False
        if isinstance(statement, ast.If):
            branch = statement.body if _value_without_flags(statement.test) else statement.orelse
            result = _returns_without_flags(branch)
            if result is not None:
                return result
        elif not (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)):  # a docstring
            raise _Unreadable(ast.dump(statement)[:200])
    return None


def dynamic_vram_on_by_default(cli_source):
    """Whether cli_args.py's `enables_dynamic_vram()` (source text or tree) is true for a launch without flags.

    0.12-0.15 define it but need `--fast dynamic_vram` (opt-in); 0.16 made it the default
    (and added --disable-dynamic-vram). False where the function is missing. A body this
    reading cannot evaluate falls back to whether the off switch --disable-dynamic-vram exists.
    """
    tree = _tree(cli_source)
    functions = [node for node in ast.walk(tree)
                 if isinstance(node, ast.FunctionDef) and node.name == "enables_dynamic_vram"]
    if not functions:
        return False
    try:
        return bool(_returns_without_flags(functions[-1].body))
    except _Unreadable:
        return "--disable-dynamic-vram" in flags_from_cli_args(tree)


def ram_cache_default_from_main(main_source):
    """Whether main.py's prompt_worker starts from the RAM-pressure cache (0.22 on) rather than the classic one.

    The first `cache_type = ...CacheType.X` in prompt_worker is the default (flags override it
    after). False where it cannot be read: the planner then names --cache-ram explicitly.
    """
    for node in ast.walk(ast.parse(main_source)):
        if isinstance(node, ast.FunctionDef) and node.name == "prompt_worker":
            for statement in node.body:
                if (isinstance(statement, ast.Assign) and any(getattr(t, "id", None) == "cache_type"
                                                              for t in statement.targets)
                        and isinstance(statement.value, ast.Attribute)):
                    return statement.value.attr == "RAM_PRESSURE"
    return False


def _ram_cache_default_in(root):
    main = Path(root) / "main.py"
    try:
        source = main.read_text(encoding="utf-8")
        return "prompt_worker" in source and ram_cache_default_from_main(source)
    except (OSError, SyntaxError, ValueError):
        return False


def core_from_checkout(path):
    """Read a ComfyUI checkout: comfyui_version.py, comfy/cli_args.py, comfy/model_patcher.py, main.py.

    Every fact comes from the files themselves, whatever the version (the version table is
    never consulted): the flags its parser defines, whether dynamic VRAM is on without flags,
    which node cache it starts with.
    """
    root = Path(os.path.expanduser(str(path))).resolve()
    version_file, cli_args = root / "comfyui_version.py", root / "comfy" / "cli_args.py"
    if not root.is_dir():
        raise CoreNotSupportedError(
            f"{root} does not exist, so it holds no ComfyUI core. "
            "Fix: pass the folder that holds ComfyUI's main.py (e.g. --core ~/ComfyUI), or a version such as 0.33.0.")
    missing = [str(p.relative_to(root)) for p in (version_file, cli_args) if not p.is_file()]
    if missing:
        raise CoreNotSupportedError(
            f"{root} is not a ComfyUI checkout: {' and '.join(missing)} not found there. "
            "Fix: pass the folder that holds ComfyUI's main.py (e.g. --core ~/ComfyUI), or a version such as 0.33.0.")
    text = _version_from_file(version_file)
    version = parse_version(text)
    if version is None:
        raise CoreNotSupportedError(f"{version_file} holds no readable __version__ (found {text!r}). "
                                    "Fix: pass the core's version instead, e.g. --core 0.33.0.")
    _check_minimum(version, f"checkout {root}")
    cli_tree = ast.parse(cli_args.read_text(encoding="utf-8"))
    patcher = root / "comfy" / "model_patcher.py"
    patcher_source = patcher.read_text(encoding="utf-8") if patcher.is_file() else ""
    dynamic = (dynamic_vram_on_by_default(cli_tree) and "class ModelPatcherDynamic" in patcher_source
               and _defines(patcher_source, ast.ClassDef, "ModelPatcherDynamic"))
    return Core(version=version, source=f"checkout {root}", flags=flags_from_cli_args(cli_tree),
                dynamic_vram=dynamic, ram_cache_default_on=_ram_cache_default_in(root))


def core_from_argument(value):
    """`--core PATH_OR_VERSION`: a version string, else a checkout folder."""
    if looks_like_version(value) and not Path(os.path.expanduser(str(value))).is_dir():
        return core_from_version(value)
    return core_from_checkout(value)


def default_checkout():
    """$COMFYUI_PATH, else ~/ComfyUI; None when neither holds comfy/cli_args.py."""
    candidate = Path(os.environ.get("COMFYUI_PATH") or Path.home() / "ComfyUI").expanduser()
    return candidate if (candidate / "comfy" / "cli_args.py").is_file() else None


# --- the running process ------------------------------------------------------


UNKNOWN_CORE = "unknown"


def running_core_version():
    """comfyui_version.__version__ of the ComfyUI this process runs in, or UNKNOWN_CORE: the one name of
    the running core that plans, replay checks and reports use."""
    module = sys.modules.get("comfyui_version")
    if module is None:
        try:
            import comfyui_version as module
        except ImportError:
            return UNKNOWN_CORE
    return str(getattr(module, "__version__", "") or UNKNOWN_CORE)


def running_core():
    """The core this process runs in (call inside ComfyUI): version, its parser's flags, dynamic VRAM now."""
    import comfy.cli_args as cli_args

    text = running_core_version()
    flags = frozenset(option for option in cli_args.parser._option_string_actions
                      if option.startswith("--") and option != "--help")  # argparse's own, as in a static read
    dynamic = hasattr(cli_args, "enables_dynamic_vram")
    cli_file = getattr(cli_args, "__file__", None)
    ram_cache = False
    if cli_file:  # the same static facts as for a checkout (0.12-0.15 define enables_dynamic_vram, off by default)
        root = Path(cli_file).resolve().parents[1]
        ram_cache = _ram_cache_default_in(root)
        try:
            dynamic = dynamic and dynamic_vram_on_by_default(Path(cli_file).read_text(encoding="utf-8"))
        except (OSError, SyntaxError, ValueError):
            pass
    active = False
    if dynamic:
        memory_management = sys.modules.get("comfy.memory_management")
        active = bool(getattr(memory_management, "aimdo_enabled", False))
    version = parse_version(text)
    note = ""
    if version is None:
        version = NEWEST_VERSION if dynamic else MINIMUM_VERSION
        note = f"comfyui_version gives no version ({text!r}): planned as {format_version(version)}"
    _check_minimum(version, "this running ComfyUI")
    return Core(version=version, source="running process", flags=flags, dynamic_vram=dynamic,
                ram_cache_default_on=ram_cache, dynamic_vram_active=active, note=note)
