"""Header-only detection of WAN 2.2 files and the loader checks, on generated safetensors headers.

Files are written with the real key layout and shapes but sparse zero data (only the header is
real), so even 14B-shaped headers cost nothing on disk and no tensors are ever built.
"""

import json
import os
from pathlib import Path
import struct
import threading
import time
import tracemalloc

from hypothesis import given, settings, strategies as st
import pytest

from tests.model_files import sd15_unet, t5_encoder, wan_dit, wan_lora, wan_vae, write_safetensors
from wanfit.errors import WanFitError
from wanfit.models import (ModelFileError, ModelMismatchError, MissingModelError, check_diffusion_model,
                           check_expert_pair, check_text_encoder, check_vae_file, check_vae_for_model, detect_variant,
                           model_variant_of,
                           load_manifest, manager_model_list, missing_model_error, noise_level_hint,
                           read_safetensors_header, special_file_in, WANFIT_MAX_HEADER_BYTES)

@pytest.fixture
def files(tmp_path):
    """The standard cast, named like the official files."""
    make = lambda name, tensors: write_safetensors(tmp_path / name, tensors)  # noqa: E731
    return {
        "ti2v": make("wan2.2_ti2v_5B_fp16.safetensors", wan_dit(48, 48)),
        "t2v_high": make("wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors", wan_dit(16, 16, fp8_scaled=True)),
        "t2v_low": make("wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors", wan_dit(16, 16, fp8_scaled=True)),
        "i2v_high": make("wan2.2_i2v_high_noise_14B_fp16.safetensors", wan_dit(36, 16)),
        "i2v_low": make("wan2.2_i2v_low_noise_14B_fp16.safetensors", wan_dit(36, 16)),
        "vae22": make("wan2.2_vae.safetensors", wan_vae(True)),
        "vae21": make("wan_2.1_vae.safetensors", wan_vae(False)),
        "umt5": make("umt5_xxl_fp8_e4m3fn_scaled.safetensors", t5_encoder(fp8_scaled=True)),
        "t5xxl": make("t5xxl_fp16.safetensors", t5_encoder(vocab=32128, per_block_bias=False)),
        "sd15": make("v1-5-pruned-emaonly.safetensors", sd15_unet()),
        "lora": make("wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors", wan_lora()),
    }


# ---------------------------------------------------------------------------------------------
# detection, table-driven

DETECTION_CASES = [
    # tensors, kind, variant, dims subset
    (wan_dit(48, 48), "diffusion_model", "ti2v_5b", {"in_dim": 48, "out_dim": 48, "dim": 128, "heads": 1, "layers": 2}),
    (wan_dit(16, 16), "diffusion_model", "t2v_a14b", {"in_dim": 16, "out_dim": 16, "ffn_dim": 256}),
    (wan_dit(36, 16), "diffusion_model", "i2v_a14b", {"in_dim": 36, "out_dim": 16}),
    (wan_dit(36, 16, prefix="model.diffusion_model."), "diffusion_model", "i2v_a14b", {"in_dim": 36}),
    (wan_dit(48, 48, prefix="model.diffusion_model."), "diffusion_model", "ti2v_5b", {"out_dim": 48}),
    (wan_dit(36, 16, img_emb=True), "diffusion_model", "unsupported", {"in_dim": 36}),
    (wan_vae(True), "vae", "wan22_vae", {"z_dim": 48}),
    (wan_vae(False), "vae", "wan21_vae", {"z_dim": 16}),
    (t5_encoder(), "text_encoder", "umt5_xxl", {"dim": 4096}),
    (t5_encoder(vocab=32128, per_block_bias=False), "text_encoder", "unsupported", {"dim": 4096}),
    (wan_lora(), "lora", "wan_lora", {"dim": 5120, "lora_rank": 64}),
    (sd15_unet(), "unknown", "unknown", {}),
]


@pytest.mark.parametrize("tensors,kind,variant,dims", DETECTION_CASES)
def test_detect_variant_table(tmp_path, tensors, kind, variant, dims):
    info = detect_variant(write_safetensors(tmp_path / "model.safetensors", tensors))
    got = (info.kind, info.variant, {k: v for k, v in info.dims.as_dict().items() if k in dims})
    assert got == (kind, variant, dims), f"expected {(kind, variant, dims)}, got {got} ({info.looks_like})"


def test_key_prefix_is_reported(tmp_path):
    info = detect_variant(write_safetensors(tmp_path / "m.safetensors", wan_dit(16, 16, prefix="model.diffusion_model.")))
    assert info.key_prefix == "model.diffusion_model."
    assert detect_variant(write_safetensors(tmp_path / "n.safetensors", wan_dit(16, 16))).key_prefix == ""


def test_fp8_scaled_dtype_and_parameter_count(files):
    info = detect_variant(files["t2v_high"])
    assert info.fp8_scaled and info.has_scale_weight_keys
    assert info.scaled_fp8_dtype == "float8_e4m3fn" and info.weight_dtype == "float8_e4m3fn"
    assert info.precision_label == "fp8 scaled"
    assert {"float8_e4m3fn", "float32"} <= set(info.dtypes)
    header = read_safetensors_header(files["t2v_high"])
    assert info.parameter_count == sum(entry.numel for entry in header.tensors.values())
    umt5 = detect_variant(files["umt5"])
    assert umt5.fp8_scaled and umt5.scaled_fp8_dtype == "float8_e4m3fn"  # F32 marker means e4m3fn (ComfyUI)


def test_fp16_file_is_not_fp8_scaled(files):
    info = detect_variant(files["i2v_high"])
    assert not info.fp8_scaled and info.weight_dtype == "float16" and info.precision_label == "float16"


@pytest.mark.parametrize("dim,size_class", [(128, "tiny"), (1536, "1.3B"), (3072, "5B"), (5120, "14B")])
def test_size_class_comes_from_dim_but_variant_does_not(tmp_path, dim, size_class):
    info = detect_variant(write_safetensors(tmp_path / "m.safetensors", wan_dit(16, 16, dim=dim, ffn_dim=dim, layers=1)))
    assert (info.variant, info.size_class, info.dims.heads) == ("t2v_a14b", size_class, dim // 128)


def test_real_size_14b_header_detects_in_milliseconds(tmp_path):
    path = write_safetensors(tmp_path / "big.safetensors", wan_dit(36, 16, dim=5120, ffn_dim=13824, layers=40))
    assert path.stat().st_size > 10**10  # sparse: costs no disk
    started = time.perf_counter()
    info = detect_variant(path)
    seconds = time.perf_counter() - started
    assert (info.variant, info.dims.layers, info.size_class) == ("i2v_a14b", 40, "14B")
    assert seconds < 0.1, f"header detection took {seconds:.3f} s, expected well under 0.1 s"


# ---------------------------------------------------------------------------------------------
# unreadable files


def test_missing_file(tmp_path):
    path = tmp_path / "nope.safetensors"
    with pytest.raises(ModelFileError) as caught:
        read_safetensors_header(path)
    assert str(caught.value).startswith(f"Model file not found: {path}.")
    assert "Fix:" in str(caught.value)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    with pytest.raises(ModelFileError) as caught:
        detect_variant(path)
    assert f"Model file is empty (0 bytes): {path}." in str(caught.value)
    assert "download it again" in str(caught.value)


def test_truncated_inside_the_header(tmp_path):
    path = write_safetensors(tmp_path / "cut.safetensors", wan_dit(16, 16))
    data = path.read_bytes()
    path.write_bytes(data[:100])
    with pytest.raises(ModelFileError) as caught:
        read_safetensors_header(path)
    assert f"Model file is truncated: {path} is 100 bytes but the header alone need" in str(caught.value)


def test_truncated_tensor_data(tmp_path):
    path = write_safetensors(tmp_path / "cut.safetensors", wan_dit(16, 16), drop_tail_bytes=1)
    with pytest.raises(ModelFileError) as caught:
        check_diffusion_model(path)
    message = str(caught.value)
    assert f"Model file is truncated: {path}" in message and "its tensors need" in message
    assert "--download" in message


@pytest.mark.parametrize("content,looks", [(b"PK\x03\x04" + b"\0" * 100, "zip archive"),
                                           (b"\x80\x02}q\x00" + b"\0" * 100, "Python pickle"),
                                           (b"<!DOCTYPE html><html>" + b" " * 100, "HTML/XML page"),
                                           (b"\x10\0\0\0\0\0\0\0not json at all!", "not a safetensors file"),
                                           (b"abc", "not a safetensors file")])
def test_not_safetensors(tmp_path, content, looks):
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(ModelFileError) as caught:
        read_safetensors_header(path)
    assert str(caught.value).startswith(f"Not a safetensors file: {path} (")
    assert looks in str(caught.value)


_VALID_FILE_BYTES = None


def _valid_file_bytes(folder):
    global _VALID_FILE_BYTES
    if _VALID_FILE_BYTES is None:
        _VALID_FILE_BYTES = write_safetensors(Path(folder) / "whole.safetensors", wan_dit(16, 16, layers=1)).read_bytes()
    return _VALID_FILE_BYTES


@settings(max_examples=60, deadline=None)
@given(st.floats(min_value=0.0, max_value=1.0, exclude_max=True))
def test_any_truncation_is_refused(tmp_path_factory, cut_fraction):
    """Every proper prefix of a valid file is refused with a ModelFileError, never a crash or a pass."""
    folder = tmp_path_factory.mktemp("cut")
    data = _valid_file_bytes(folder)
    path = folder / "m.safetensors"
    path.write_bytes(data[: int(cut_fraction * len(data))])
    with pytest.raises(ModelFileError):
        read_safetensors_header(path)


# ---------------------------------------------------------------------------------------------
# hostile and damaged files: refused by the header check, naming the file, reading little


def write_raw_header(path, header, data_bytes=None, extra_bytes=0):
    """A file with exactly this header (a dict, or raw JSON bytes) and a data region of data_bytes
    (default: what the header's largest end offset says) plus extra_bytes."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    if data_bytes is None:
        ends = [e["data_offsets"][1] for e in header.values() if isinstance(e, dict) and "data_offsets" in e]
        data_bytes = max([end for end in ends if isinstance(end, int)], default=0)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(raw)) + raw)
        handle.truncate(8 + len(raw) + data_bytes + extra_bytes)
    return path


def tensor(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def refusal(path):
    with pytest.raises(ModelFileError) as caught:
        read_safetensors_header(path)
    message = str(caught.value)
    assert str(path) in message and "Fix:" in message, message
    return message


def safetensors_refuses(path):
    safetensors = pytest.importorskip("safetensors")
    try:
        with safetensors.safe_open(str(path), "np"):
            return False
    except Exception:  # SafetensorError, and whatever a future version raises instead
        return True


DAMAGED_HEADERS = [
    # id, header, extra bytes after the data, what the message must say
    ("overlap", {"a": tensor("F16", [4], 0, 8), "b": tensor("F16", [4], 4, 12)}, 0, "overlaps the tensor before it"),
    ("backwards", {"a": tensor("F16", [1], 2, 0)}, 2, "runs backwards"),
    ("gap", {"a": tensor("F16", [1], 0, 2), "b": tensor("F16", [1], 4, 6)}, 0, "leaves a gap before it"),
    ("same offsets twice", {"a": tensor("F16", [1], 0, 2), "b": tensor("F16", [1], 0, 2)}, 0, "overlaps"),
    ("size not dtype x shape", {"a": tensor("F16", [3], 0, 4)}, 0, "needs 6 bytes but its data_offsets [0, 4] span 4"),
    ("unknown dtype", {"a": tensor("F17", [1], 0, 2)}, 0, "dtype 'F17', which safetensors does not know"),
    ("lower-case dtype", {"a": tensor("f16", [1], 0, 2)}, 0, "dtype 'f16'"),
    ("trailing bytes", {"a": tensor("F16", [1], 0, 2)}, 5, "5 bytes after the last tensor's data"),
    ("negative shape", {"a": tensor("F16", [-1], 0, 2)}, 0, "not a list of whole numbers"),
    ("boolean shape", {"a": tensor("F16", [True], 0, 2)}, 0, "not a list of whole numbers"),
    ("string offsets", {"a": {"dtype": "F16", "shape": [1], "data_offsets": ["0", "2"]}}, 2, "data_offsets ['0', '2']"),
    ("three offsets", {"a": {"dtype": "F16", "shape": [1], "data_offsets": [0, 2, 4]}}, 2, "not [begin, end]"),
    ("entry not an object", {"a": [1, 2]}, 0, "described by list"),
    ("metadata not strings", {"__metadata__": {"epoch": 3}, "a": tensor("F16", [1], 0, 2)}, 0,
     "__metadata__ is not a map of strings"),
]


@pytest.mark.parametrize("header, extra_bytes, says", [row[1:] for row in DAMAGED_HEADERS],
                         ids=[row[0] for row in DAMAGED_HEADERS])
def test_damaged_header_is_refused_naming_the_file_where_safetensors_would_fail_at_load(tmp_path, header,
                                                                                         extra_bytes, says):
    path = write_raw_header(tmp_path / "damaged.safetensors", header, extra_bytes=extra_bytes)
    message = refusal(path)
    assert message.startswith(f"Damaged safetensors file: {path} (") and says in message, message
    assert safetensors_refuses(path), "the check refuses a file that safetensors itself would load"


def test_deeply_nested_json_is_refused_without_a_recursion_error(tmp_path):
    path = write_raw_header(tmp_path / "nested.safetensors", b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}", 0)
    message = refusal(path)
    assert message.startswith(f"Not a safetensors file: {path} (") and "nested too deeply" in message


@pytest.mark.parametrize("header, data_bytes", [
    ({"a": tensor("F16", [0], 0, 0), "b": tensor("F16", [1], 0, 2)}, 2),  # empty tensor first, same offset
    ({"a": tensor("F4", [4], 0, 2), "b": tensor("F8_E8M0", [2], 2, 4), "c": tensor("U64", [], 4, 12)}, 12),
    ({"__metadata__": {"format": "pt"}, "b": tensor("BF16", [1, 2], 4, 8), "a": tensor("F32", [1], 0, 4)}, 8),
    ({}, 0),
])
def test_unusual_but_valid_headers_pass_as_they_load_in_safetensors(tmp_path, header, data_bytes):
    path = write_raw_header(tmp_path / "ok.safetensors", header, data_bytes=data_bytes)
    assert not safetensors_refuses(path)
    read_safetensors_header(path)


def test_every_generated_fixture_passes_the_stricter_check(files):
    for path in files.values():
        assert read_safetensors_header(path).tensors


def test_a_huge_header_is_refused_before_it_is_read(tmp_path):
    """A 99 MB header (1.7 M entries) froze the server for 32 s: now at most the 8-byte length is used."""
    path = tmp_path / "huge_header.safetensors"
    header_bytes = 99_000_000
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", header_bytes) + b'{"a":')
        handle.truncate(8 + header_bytes + 2)  # sparse: costs no disk
    tracemalloc.start()
    try:
        started = time.perf_counter()
        message = refusal(path)
        seconds = time.perf_counter() - started
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert message.startswith(f"Safetensors header too large: {path} declares a 94.4 MiB header")
    assert f"at most {WANFIT_MAX_HEADER_BYTES // 2**20} MiB" in message
    assert peak_bytes < 1_000_000, f"read {peak_bytes} bytes into memory, expected only the 8-byte length"
    assert seconds < 1.0


def test_large_trainer_metadata_within_the_cap_is_accepted(tmp_path):
    """LoRA trainers keep dataset tag counts in __metadata__, a few MB: still a model file."""
    tags = json.dumps({f"tag_{i}": i for i in range(200_000)})
    assert len(tags) > 4_000_000
    path = write_safetensors(tmp_path / "lora.safetensors", wan_lora(), metadata={"ss_tag_frequency": tags})
    assert read_safetensors_header(path).metadata["ss_tag_frequency"] == tags


def call_with_deadline(function, seconds=10):
    """Run function in a daemon thread: a check that blocks (opening a FIFO) fails the test instead of hanging it."""
    outcome = {}

    def target():
        try:
            outcome["result"] = function()
        except Exception as error:  # noqa: BLE001 - handed back to the test
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s: it blocked"
    return outcome


needs_posix = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs and /dev/zero are POSIX")


@needs_posix
def test_a_fifo_is_named_as_one_and_never_opened(tmp_path):
    path = tmp_path / "wan2.2_ti2v_5B_fp16.safetensors"
    os.mkfifo(path)
    outcome = call_with_deadline(lambda: read_safetensors_header(path))
    message = str(outcome["error"])
    assert isinstance(outcome["error"], ModelFileError)
    assert message.startswith(f"Not a model file: {path} is a FIFO (named pipe).") and "Fix:" in message


@needs_posix
@pytest.mark.parametrize("target, what", [("/dev/zero", "a symbolic link to /dev/zero, which is a character device"),
                                          ("missing.safetensors", "which does not exist")])
def test_a_link_to_a_device_or_nowhere_says_what_it_is(tmp_path, target, what):
    path = tmp_path / "model.safetensors"
    os.symlink(target, path)
    message = refusal(path)
    assert message.startswith(f"Not a model file: {path} is ") and what in message


@needs_posix
def test_special_entries_are_found_in_the_model_folders_without_leaving_them(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    (first / "good.safetensors").write_bytes(b"x")
    os.mkfifo(second / "pipe.safetensors")
    os.mkfifo(tmp_path / "outside.safetensors")
    folders = [str(first), str(second)]
    assert special_file_in(folders, "pipe.safetensors") == str(second / "pipe.safetensors")
    assert special_file_in(folders, "good.safetensors") is None
    assert special_file_in(folders, "nowhere.safetensors") is None
    assert special_file_in(folders, "../outside.safetensors") is None


# ---------------------------------------------------------------------------------------------
# loader checks


def test_sd15_is_not_a_wan_model(files):
    with pytest.raises(ModelMismatchError) as caught:
        check_diffusion_model(files["sd15"])
    message = str(caught.value)
    assert message.startswith(f"Not a WAN 2.2 model: {files['sd15']} looks like a Stable Diffusion 1.x/2.x/SDXL UNet")
    assert "wan2.2_ti2v_5B_fp16.safetensors" in message and "Fix:" in message


def test_wan21_i2v_is_refused(tmp_path):
    path = write_safetensors(tmp_path / "wan2.1_i2v_480p_14B_fp16.safetensors", wan_dit(36, 16, img_emb=True))
    with pytest.raises(ModelMismatchError, match="Wan 2.1 image-to-video model"):
        check_diffusion_model(path)


def test_expected_variant(files):
    assert check_diffusion_model(files["ti2v"], "ti2v_5b").variant == "ti2v_5b"
    with pytest.raises(ModelMismatchError) as caught:
        check_diffusion_model(files["t2v_high"], "ti2v_5b")
    assert f"Wrong WAN 2.2 model: {files['t2v_high']} is a WAN 2.2 T2V-A14B expert (t2v_a14b)" in str(caught.value)
    assert "wan2.2_ti2v_5B_fp16.safetensors" in str(caught.value)


@pytest.mark.parametrize("vae,model,needed", [("vae21", "ti2v_5b", "wan2.2_vae.safetensors"),
                                               ("vae22", "t2v_a14b", "wan_2.1_vae.safetensors"),
                                               ("vae22", "i2v_a14b", "wan_2.1_vae.safetensors")])
def test_wrong_vae_names_both_files_and_the_right_one(files, vae, model, needed):
    model_path = files["ti2v"] if model == "ti2v_5b" else files["t2v_high"]
    with pytest.raises(ModelMismatchError) as caught:
        check_vae_for_model(files[vae], model, model_path=model_path)
    message = str(caught.value)
    assert message.startswith(f"Wrong VAE for this model: {files[vae]} is the ")
    assert str(model_path) in message and f"Fix: load {needed} from models/vae instead" in message
    assert "https://huggingface.co/" in message


def test_right_vae_passes_and_accepts_model_info(files):
    assert check_vae_for_model(files["vae22"], "ti2v_5b").variant == "wan22_vae"
    assert check_vae_for_model(files["vae21"], detect_variant(files["i2v_low"])).variant == "wan21_vae"


def test_non_vae_given_as_vae(files):
    with pytest.raises(ModelMismatchError, match=r"^Not a WAN VAE: .* looks like a WAN 2.2 TI2V-5B"):
        check_vae_for_model(files["ti2v"], "ti2v_5b")


@pytest.mark.parametrize("name", ["vae22", "vae21"])
def test_any_wan_vae_passes_when_no_model_says_which(files, name):
    assert check_vae_file(files[name]).kind == "vae"


@pytest.mark.parametrize("name, looks_like", [("ti2v", "a WAN 2.2 TI2V-5B"), ("sd15", "a Stable Diffusion 1.x")])
def test_not_a_wan_vae_names_both_vaes_and_the_models_command(files, name, looks_like):
    with pytest.raises(ModelMismatchError) as raised:
        check_vae_file(files[name])
    message = str(raised.value)
    assert message.startswith(f"Not a WAN VAE: {files[name]} looks like {looks_like}"), message
    assert ("Expected the Wan 2.2 VAE (wan2.2_vae.safetensors, for TI2V-5B) or the Wan 2.1 VAE "
            "(wan_2.1_vae.safetensors, for A14B) in models/vae. Fix: pick one of those; python -m wanfit models "
            "lists them with their download links.") in message
    assert raised.value.paths == [str(files[name])]


def loaded_model(unet_config):
    """The shape of a ComfyUI MODEL as model_variant_of reads it: model.model.model_config.unet_config."""
    from types import SimpleNamespace

    return SimpleNamespace(model=SimpleNamespace(model_config=SimpleNamespace(unet_config=unet_config)))


@pytest.mark.parametrize("unet_config, variant", [
    ({"image_model": "wan2.1", "in_dim": 48, "out_dim": 48}, "ti2v_5b"),
    ({"image_model": "wan2.1", "in_dim": 16, "out_dim": 16}, "t2v_a14b"),
    ({"image_model": "wan2.1", "in_dim": 36, "out_dim": 16}, "i2v_a14b"),
    ({"image_model": "flux"}, None),
    ({}, None),
], ids=["ti2v_5b", "t2v_a14b", "i2v_a14b", "another model", "no config"])
def test_model_variant_of_a_loaded_model(unet_config, variant):
    assert model_variant_of(loaded_model(unet_config)) == variant


def test_model_variant_of_nothing_is_none():
    assert model_variant_of(None) is None and model_variant_of(object()) is None


def test_text_encoder(files):
    info = check_text_encoder(files["umt5"])
    assert (info.variant, info.fp8_scaled) == ("umt5_xxl", True)
    with pytest.raises(ModelMismatchError) as caught:
        check_text_encoder(files["t5xxl"])
    assert str(caught.value).startswith(f"Not the umt5-xxl text encoder: {files['t5xxl']} looks like a T5-XXL")
    assert "umt5_xxl_fp8_e4m3fn_scaled.safetensors" in str(caught.value)
    with pytest.raises(ModelMismatchError, match="looks like the Wan 2.1 VAE"):
        check_text_encoder(files["vae21"])


def test_expert_pair_ok_says_which_is_which(files):
    pair = check_expert_pair(files["t2v_high"], files["t2v_low"])
    assert pair.task == "t2v_a14b" and pair.high.path == str(files["t2v_high"])
    assert "high-noise expert: wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors (file name says high-noise)" in pair.roles


def test_t2v_paired_with_i2v(files):
    with pytest.raises(ModelMismatchError) as caught:
        check_expert_pair(files["t2v_high"], files["i2v_low"])
    message = str(caught.value)
    assert message.startswith(f"The A14B experts are for different tasks: high-noise {files['t2v_high']} is a "
                              f"WAN 2.2 T2V-A14B expert (in_dim 16), low-noise {files['i2v_low']} is a WAN 2.2 "
                              f"I2V-A14B expert (in_dim 36).")
    assert "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors" in message


def test_same_file_twice_including_through_a_symlink(files, tmp_path):
    for other in (files["i2v_high"], tmp_path / "link.safetensors"):
        if other.name == "link.safetensors":
            other.symlink_to(files["i2v_high"])
        with pytest.raises(ModelMismatchError) as caught:
            check_expert_pair(files["i2v_high"], other)
        assert str(caught.value).startswith("The same file was given as both A14B experts: high-noise = "
                                            f"{files['i2v_high']}, low-noise = {other}.")


def test_swapped_experts(files):
    with pytest.raises(ModelMismatchError, match="The A14B experts look swapped"):
        check_expert_pair(files["i2v_low"], files["i2v_high"])


def test_ti2v_in_a_pair_and_mismatched_dims(files, tmp_path):
    with pytest.raises(ModelMismatchError, match="TI2V-5B is a single model, not an A14B expert"):
        check_expert_pair(files["ti2v"], files["t2v_low"])
    other = write_safetensors(tmp_path / "x_low_noise.safetensors", wan_dit(16, 16, layers=3))
    with pytest.raises(ModelMismatchError, match="The A14B experts have different architectures"):
        check_expert_pair(files["t2v_high"], other)


def test_pair_without_name_hints_is_trusted_by_slot(tmp_path):
    a = write_safetensors(tmp_path / "expert_a.safetensors", wan_dit(16, 16))
    b = write_safetensors(tmp_path / "expert_b.safetensors", wan_dit(16, 16))
    assert "trusted by slot" in check_expert_pair(a, b).roles


@pytest.mark.parametrize("name,hint", [("wan2.2_t2v_high_noise_14B_fp16.safetensors", "high"),
                                        ("Wan_2_2_I2V_A14B_LOW_lightx2v.safetensors", "low"),
                                        ("wanfit_tiny_i2v_low_noise_14B.safetensors", "low"),
                                        ("highres_fix.safetensors", None), ("lowvram.safetensors", None),
                                        ("wan2.2_ti2v_5B_fp16.safetensors", None)])
def test_noise_level_hint(name, hint):
    assert noise_level_hint(name) == hint


def test_errors_are_wanfit_errors():
    assert issubclass(ModelFileError, WanFitError) and issubclass(ModelMismatchError, WanFitError)
    assert issubclass(MissingModelError, ModelFileError)


# ---------------------------------------------------------------------------------------------
# manifest

REQUIRED_FILES = {
    "wan2.2_ti2v_5B_fp16.safetensors": "diffusion_models",
    "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors": "diffusion_models",
    "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors": "diffusion_models",
    "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors": "diffusion_models",
    "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors": "diffusion_models",
    "wan2.2_t2v_high_noise_14B_fp16.safetensors": "diffusion_models",
    "wan2.2_t2v_low_noise_14B_fp16.safetensors": "diffusion_models",
    "wan2.2_i2v_high_noise_14B_fp16.safetensors": "diffusion_models",
    "wan2.2_i2v_low_noise_14B_fp16.safetensors": "diffusion_models",
    "umt5_xxl_fp8_e4m3fn_scaled.safetensors": "text_encoders",
    "umt5_xxl_fp16.safetensors": "text_encoders",
    "wan2.2_vae.safetensors": "vae",
    "wan_2.1_vae.safetensors": "vae",
    "wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors": "loras",
    "wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors": "loras",
    "wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors": "loras",
    "wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors": "loras",
}


def test_manifest_lists_every_official_file_with_its_folder():
    manifest = load_manifest()
    assert {f["filename"]: f["folder"] for f in manifest["files"]} == REQUIRED_FILES


def test_manifest_entries_are_well_formed():
    manifest = load_manifest()
    names = {f["filename"] for f in manifest["files"]}
    for entry in manifest["files"]:
        assert entry["url"].startswith("https://huggingface.co/Comfy-Org/") and entry["url"].endswith(entry["filename"])
        assert entry["sha256"] is None or (len(entry["sha256"]) == 64 and entry["sha256_source"])
        assert entry["size_bytes"] is None or entry["size_bytes"] > 0
        assert set(entry["workflows"]) <= set(manifest["workflows"])
    assert set(manifest["workflows"]) == {"ti2v_5b_t2v", "ti2v_5b_i2v", "a14b_t2v", "a14b_i2v",
                                          "a14b_t2v_lightx2v", "a14b_i2v_lightx2v"}
    for workflow in manifest["workflows"].values():
        for slot in workflow["slots"]:
            assert set(slot["any_of"]) <= names


def test_manifest_vae_pairing_matches_the_checks():
    manifest = load_manifest()
    by_name = {f["filename"]: f for f in manifest["files"]}
    for workflow_id, workflow in manifest["workflows"].items():
        vae = next(s for s in workflow["slots"] if s["role"] == "vae")["any_of"][0]
        assert by_name[vae]["variant"] == ("wan22_vae" if workflow_id.startswith("ti2v") else "wan21_vae")


def test_missing_model_error_names_folder_and_url(tmp_path):
    error = missing_model_error("wan_2.1_vae.safetensors", "vae", models_dir=tmp_path)
    assert isinstance(error, MissingModelError) and error.folder == "vae"
    assert str(error).startswith(f"Model file missing: wan_2.1_vae.safetensors is not in {tmp_path / 'vae'}.")
    assert error.url in str(error) and error.url.endswith("/vae/wan_2.1_vae.safetensors")
    unknown = missing_model_error("my_model.safetensors", "diffusion_models")
    assert "not one of the official WAN 2.2 files" in str(unknown) and unknown.url is None


def test_manager_model_list_has_managers_fields():
    models = manager_model_list()["models"]
    assert len(models) == len(REQUIRED_FILES)
    for item in models:
        assert {"name", "type", "base", "save_path", "description", "reference", "filename", "url"} <= set(item)
        assert item["save_path"] in {"diffusion_models", "text_encoders", "vae", "loras"}
