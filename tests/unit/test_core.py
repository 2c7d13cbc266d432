"""Which ComfyUI core: from a checkout (read, never imported), a version string, the running process."""

from pathlib import Path
import sys
from types import ModuleType, SimpleNamespace

import pytest

from tests.fake_checkout import fake_checkout
from wanfit import core as cores
from wanfit.core import CoreNotSupportedError, core_from_argument, core_from_checkout, core_from_version
from wanfit.errors import WanFitError

CHECKOUTS = {"0.3.64": Path.home() / "ComfyUI-0.3.64", "0.33.0": Path.home() / "ComfyUI-0.33.0"}


DYNAMIC_CLI_ARGS = '''
import argparse
parser = argparse.ArgumentParser()
group = parser.add_mutually_exclusive_group()
group.add_argument("--lowvram", action="store_true")
parser.add_argument("--reserve-vram", type=float, default=None)
parser.add_argument("--port", type=int, default=8188)
def enables_dynamic_vram():
    return True
'''


@pytest.mark.parametrize("text, version, dynamic", [
    ("0.3.64", (0, 3, 64), False),
    ("v0.33.0", (0, 33, 0), True),
    ("0.33", (0, 33, 0), True),
])
def test_known_versions_come_from_the_table(text, version, dynamic):
    core = core_from_version(text)
    assert core.version == version and core.dynamic_vram == dynamic and not core.note
    assert "--reserve-vram" in core.flags and "--cpu" in core.flags


def test_table_differences_between_the_cores():
    oldest, newest = core_from_version("0.3.64"), core_from_version("0.33.0")
    assert {"--vram-headroom", "--disable-pinned-memory", "--cache-ram", "--disable-dynamic-vram"} <= newest.flags - oldest.flags
    assert {"--normalvram"} <= oldest.flags - newest.flags
    assert newest.async_offload_default_on and not oldest.async_offload_default_on


@pytest.mark.parametrize("text, planned_as", [("0.10.2", "0.3.64"), ("0.32.9", "0.3.64"), ("0.45.1", "0.33.0")])
def test_a_version_between_or_after_uses_the_nearest_older_known_core_and_says_so(text, planned_as):
    core = core_from_version(text)
    assert core.version_text == text
    assert core.flags == core_from_version(planned_as).flags
    assert f"planned with the flags of {planned_as}" in core.note


@pytest.mark.parametrize("text", ["0.3.63", "0.2.7", "v0.1"])
def test_an_older_core_names_the_minimum(text):
    with pytest.raises(CoreNotSupportedError, match=r"older than the oldest core WanFit supports, 0\.3\.64"):
        core_from_version(text)


def test_garbage_version_is_a_clear_error():
    with pytest.raises(WanFitError, match="neither a ComfyUI version"):
        core_from_version("latest")


@pytest.mark.parametrize("version", list(CHECKOUTS))
def test_the_table_matches_each_real_checkout(version):
    path = CHECKOUTS[version]
    if not (path / "comfy" / "cli_args.py").is_file():
        pytest.skip(f"no ComfyUI {version} checkout at {path}")
    from_disk, from_table = core_from_checkout(path), core_from_version(version)
    assert from_disk.version == from_table.version
    assert from_disk.dynamic_vram == from_table.dynamic_vram
    assert from_disk.ram_cache_default_on == from_table.ram_cache_default_on
    assert from_disk.flags == from_table.flags, (
        f"update wanfit/core.py's table: only on disk {sorted(from_disk.flags - from_table.flags)}, "
        f"only in the table {sorted(from_table.flags - from_disk.flags)}")


def test_checkout_is_read_statically(tmp_path):
    root = fake_checkout(tmp_path / "ComfyUI", "0.40.0", DYNAMIC_CLI_ARGS,
                         "class ModelPatcher:\n    pass\nclass ModelPatcherDynamic(ModelPatcher):\n    pass\n")
    core = core_from_checkout(root)
    assert core.version == (0, 40, 0) and core.dynamic_vram
    assert core.flags == {"--lowvram", "--reserve-vram", "--port"}
    assert str(root) in core.source and "ComfyUI 0.40.0" in core.describe()
    assert "comfy" not in sys.modules or not getattr(sys.modules["comfy"], "__file__", "").startswith(str(root))


def test_checkout_without_model_patcher_dynamic_has_no_dynamic_vram(tmp_path):
    root = fake_checkout(tmp_path / "ComfyUI", "0.3.70", DYNAMIC_CLI_ARGS, "class ModelPatcher:\n    pass\n")
    assert not core_from_checkout(root).dynamic_vram


def test_checkout_older_than_the_minimum_names_it(tmp_path):
    root = fake_checkout(tmp_path / "old", "0.3.40", DYNAMIC_CLI_ARGS)
    with pytest.raises(CoreNotSupportedError, match=r"0\.3\.40 .*older than .* 0\.3\.64"):
        core_from_checkout(root)


@pytest.mark.parametrize("make", ["empty", "missing", "no_version"])
def test_unknown_path_names_the_path(tmp_path, make):
    root = tmp_path / "not-comfy"
    if make == "empty":
        root.mkdir()
        expected = "is not a ComfyUI checkout"
    elif make == "missing":
        expected = "does not exist"
    else:
        fake_checkout(root, "unknown", DYNAMIC_CLI_ARGS)
        expected = "no readable __version__"
    with pytest.raises(CoreNotSupportedError) as caught:
        core_from_argument(str(root))
    assert str(root) in str(caught.value) and expected in str(caught.value)


def test_argument_is_a_version_or_a_path(tmp_path):
    assert core_from_argument("0.33.0").source == "version 0.33.0"
    root = fake_checkout(tmp_path / "c", "0.3.64", DYNAMIC_CLI_ARGS)
    assert core_from_argument(str(root)).source == f"checkout {root.resolve()}"


def fake_running_comfy(monkeypatch, parser, dynamic_vram, version, aimdo, cli_args_file=None):
    """The comfy modules running_core() reads in a ComfyUI process, as stand-ins in sys.modules."""
    cli_args = ModuleType("comfy.cli_args")
    if cli_args_file is not None:
        cli_args.__file__ = str(cli_args_file)
    cli_args.parser, cli_args.enables_dynamic_vram = parser, lambda: dynamic_vram
    comfy = ModuleType("comfy")
    comfy.cli_args = cli_args
    monkeypatch.setitem(sys.modules, "comfy", comfy)
    monkeypatch.setitem(sys.modules, "comfy.cli_args", cli_args)
    monkeypatch.setitem(sys.modules, "comfyui_version", SimpleNamespace(__version__=version))
    monkeypatch.setitem(sys.modules, "comfy.memory_management", SimpleNamespace(aimdo_enabled=aimdo))


def test_running_core_reads_the_live_parser_and_aimdo_state(monkeypatch):
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--reserve-vram", type=float)
    parser.add_argument("--disable-dynamic-vram", action="store_true")
    fake_running_comfy(monkeypatch, parser, dynamic_vram=True, version="0.33.0", aimdo=True)
    core = cores.running_core()
    assert core.version == (0, 33, 0) and core.dynamic_vram and core.dynamic_vram_active
    assert core.flags == {"--reserve-vram", "--disable-dynamic-vram"}
    monkeypatch.setitem(sys.modules, "comfy.memory_management", SimpleNamespace(aimdo_enabled=False))
    assert cores.running_core().dynamic_vram_active is False
    monkeypatch.setitem(sys.modules, "comfyui_version", SimpleNamespace(__version__="0.3.12"))
    with pytest.raises(CoreNotSupportedError, match="0.3.64"):
        cores.running_core()


def test_flags_parser_reads_groups_and_ignores_other_calls():
    source = ('p.add_argument("--a", "-x")\ng = p.add_mutually_exclusive_group()\ng.add_argument("--b")\n'
              'other("--c")\np.add_argument(name)\n')
    assert cores.flags_from_cli_args(source) == {"--a", "--b"}


# 0.12-0.15: dynamic VRAM is in the checkout but opt-in (`--fast dynamic_vram`); 0.16 made it the default.
OPT_IN_CLI_ARGS = '''
import argparse, enum
class PerformanceFeature(enum.Enum):
    DynamicVRAM = "dynamic_vram"
parser = argparse.ArgumentParser()
parser.add_argument("--fast", nargs="*", type=PerformanceFeature)
parser.add_argument("--highvram", action="store_true")
parser.add_argument("--gpu-only", action="store_true")
def enables_dynamic_vram():
    return PerformanceFeature.DynamicVRAM in args.fast and not args.highvram and not args.gpu_only
'''
DEFAULT_ON_CLI_ARGS = '''
import argparse
parser = argparse.ArgumentParser()
parser.add_argument("--disable-dynamic-vram", action="store_true")
parser.add_argument("--enable-dynamic-vram", action="store_true")
def enables_dynamic_vram():
    """On unless a flag turns it off."""
    if args.enable_dynamic_vram:
        return True
    return not args.disable_dynamic_vram and not args.highvram and not args.gpu_only and not args.novram and not args.cpu
'''
PATCHER_WITH_DYNAMIC = "class ModelPatcher:\n    pass\nclass ModelPatcherDynamic(ModelPatcher):\n    pass\n"


@pytest.mark.parametrize("source, expected", [
    (OPT_IN_CLI_ARGS, False),
    (DEFAULT_ON_CLI_ARGS, True),
    ("def enables_dynamic_vram():\n    return True\n", True),
    ("def enables_dynamic_vram():\n    if args.cpu:\n        return False\n    else:\n        return True\n", True),
    ("parser.add_argument('--lowvram')\n", False),  # no dynamic VRAM at all (0.3.64-0.11)
])
def test_dynamic_vram_is_on_by_default_only_where_a_launch_without_flags_enables_it(source, expected):
    assert cores.dynamic_vram_on_by_default(source) is expected


@pytest.mark.parametrize("extra_flag, expected", [("--disable-dynamic-vram", True), ("--port", False)])
def test_an_unreadable_enables_dynamic_vram_falls_back_to_whether_its_off_switch_exists(extra_flag, expected):
    source = (f'parser.add_argument("{extra_flag}")\n'
              "def enables_dynamic_vram():\n    return helper(args) or platform_default()\n")
    assert cores.dynamic_vram_on_by_default(source) is expected


def test_a_checkout_with_opt_in_dynamic_vram_plans_without_it(tmp_path):
    opt_in = core_from_checkout(fake_checkout(tmp_path / "a", "0.12.3", OPT_IN_CLI_ARGS, PATCHER_WITH_DYNAMIC))
    default_on = core_from_checkout(fake_checkout(tmp_path / "b", "0.16.4", DEFAULT_ON_CLI_ARGS, PATCHER_WITH_DYNAMIC))
    assert not opt_in.dynamic_vram and default_on.dynamic_vram


MAIN_WITH_CACHE = '''
def prompt_worker(q, server_instance):
    cache_ram = 0
    cache_type = execution.CacheType.{default}
    if args.cache_classic:
        cache_type = execution.CacheType.CLASSIC
    elif args.cache_ram > 0:
        cache_type = execution.CacheType.RAM_PRESSURE
'''


@pytest.mark.parametrize("default, expected", [("RAM_PRESSURE", True), ("CLASSIC", False)])
def test_the_default_node_cache_is_the_first_cache_type_in_prompt_worker(tmp_path, default, expected):
    assert cores.ram_cache_default_from_main(MAIN_WITH_CACHE.format(default=default)) is expected
    root = fake_checkout(tmp_path / "c", "0.25.0", DEFAULT_ON_CLI_ARGS)
    (root / "main.py").write_text(MAIN_WITH_CACHE.format(default=default))
    assert core_from_checkout(root).ram_cache_default_on is expected


def test_a_checkout_whose_main_cannot_be_read_counts_as_the_classic_cache(tmp_path):
    root = fake_checkout(tmp_path / "d", "0.25.0", DEFAULT_ON_CLI_ARGS)
    assert core_from_checkout(root).ram_cache_default_on is False  # no main.py: the planner names --cache-ram
    (root / "main.py").write_text("def prompt_worker(:\n")
    assert core_from_checkout(root).ram_cache_default_on is False


# What the intermediate releases hold (tests/matrix/releases.txt; bash tests/matrix/get_cores.sh makes them).
RELEASE_FACTS = {  # version: (dynamic VRAM on by default, RAM-pressure cache by default)
    "0.11.0": (False, False), "0.12.3": (False, False), "0.16.4": (True, False),
    "0.21.0": (True, False), "0.25.0": (True, True),
}


@pytest.mark.parametrize("version", list(RELEASE_FACTS))
def test_intermediate_releases_are_read_from_their_files_not_the_version_table(version):
    path = Path.home() / f"ComfyUI-{version}"
    if not (path / "comfy" / "cli_args.py").is_file():
        pytest.skip(f"no ComfyUI {version} checkout at {path} (bash tests/matrix/get_cores.sh)")
    core = core_from_checkout(path)
    assert (core.dynamic_vram, core.ram_cache_default_on) == RELEASE_FACTS[version]
    assert not core.note, core.note  # the note is for a version string planned from the table


def test_running_core_reads_its_own_checkout_for_the_static_facts(monkeypatch, tmp_path):
    import argparse

    root = fake_checkout(tmp_path / "running", "0.12.3", OPT_IN_CLI_ARGS, PATCHER_WITH_DYNAMIC)
    (root / "main.py").write_text(MAIN_WITH_CACHE.format(default="CLASSIC"))
    fake_running_comfy(monkeypatch, argparse.ArgumentParser(), dynamic_vram=False, version="0.12.3", aimdo=False,
                       cli_args_file=root / "comfy" / "cli_args.py")
    core = cores.running_core()
    assert not core.dynamic_vram and not core.ram_cache_default_on
