"""The tiled decode's check against this core's own VAE decode, in-process on the Wan 2.1 fixture VAE.

A release that changed its decoder is played by patching the core's WanVAE.decode (its output moves by
0.01): WanFit's tiles then no longer reproduce it, and the node must run the core's own decode (mode
auto) or refuse (mode on), saying which core, which check and how far apart.
"""

import functools

import pytest
import torch

from tests.comfy_import import import_comfy

from tests.decode_budgets import tiled_exact_budget

LATENT = (1, 16, 2, 6, 6)


@pytest.fixture(scope="module")
def vae(comfyui, fixtures):
    import_comfy(comfyui)
    import comfy.sd
    import comfy.utils

    return comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(fixtures["vae"]["wanfit_random_wan_2.1_vae.safetensors"])))


@functools.cache
def tiled_budget(vae):
    """2x2 exact tiles or fewer for this latent: a tiled plan, so the check runs."""
    return tiled_exact_budget(vae.first_stage_model, LATENT, 4)


@pytest.fixture
def fresh_checks():
    """No verdict from an earlier test: the next tiled decode checks itself again."""
    from wanfit import replay_check

    replay_check.forget_checks()
    yield replay_check
    replay_check.forget_checks()


def latent():
    return torch.randn(*LATENT, generator=torch.Generator().manual_seed(5)) * 0.5


def decode_in_auto(vae):
    """(WanFit VAE Decode's images in mode auto, the core's own decode, the notes on which path ran)."""
    from wanfit.decode import decode_comfy_vae

    notes = []
    with torch.inference_mode():
        images = decode_comfy_vae(vae, latent(), tiled_budget(vae), allow_untiled=False,
                                  mode="auto", on_note=notes.append)
        core = vae.decode(latent())
    return images.reshape(core.shape), core, notes


def changed_core_decoder(monkeypatch, vae):
    module_class = type(vae.first_stage_model)
    original = module_class.decode

    def decode(self, z, *args, **kwargs):
        return original(self, z, *args, **kwargs) + 0.02

    monkeypatch.setattr(module_class, "decode", decode)


def test_the_check_passes_on_this_core_and_the_tiles_run(vae, fresh_checks):
    from wanfit.decode import decode_comfy_vae

    notes, plans = [], []
    with torch.inference_mode():
        images = decode_comfy_vae(vae, latent(), tiled_budget(vae), allow_untiled=False,
                                  mode="on", on_note=notes.append, on_plan=plans.append)
        core = vae.decode(latent())
    assert plans and 1 < plans[-1].tile_count <= 4 and plans[-1].exact, plans[-1].describe() if plans else plans
    assert (images.reshape(core.shape) - core).abs().max().item() < 1e-3
    (check,) = fresh_checks.cached_checks()
    assert check.passed and check.difference < 1e-3 and notes == [check.describe()], notes


def test_a_decoder_the_tiles_do_not_reproduce_runs_the_cores_decode_in_auto(vae, fresh_checks, monkeypatch):
    from wanfit.decode import decode_comfy_vae

    changed_core_decoder(monkeypatch, vae)
    notes, plans = [], []
    with torch.inference_mode():
        images = decode_comfy_vae(vae, latent(), tiled_budget(vae), allow_untiled=False,
                                  mode="auto", on_note=notes.append, on_plan=plans.append)
        core = vae.decode(latent())
    assert not plans, "WanFit's tiles ran although the check failed"
    assert torch.equal(images.reshape(core.shape), core), "mode auto after a failed check must be the core's decode"
    (note,) = notes
    assert "tiled decode check against the core's own VAE decode failed (ComfyUI" in note, note
    assert "vae.WanVAE, float32 on cpu" in note and "> 0.001" in note and "instead: ComfyUI's own VAE decode" in note, note


def test_a_decoder_the_tiles_do_not_reproduce_is_refused_in_mode_on(vae, fresh_checks, monkeypatch):
    from wanfit.decode import decode_comfy_vae

    changed_core_decoder(monkeypatch, vae)
    with torch.inference_mode(), pytest.raises(fresh_checks.ReplayMismatchError,
                                               match=r"mode on.*failed \(ComfyUI [0-9.]+.*max difference 0\.0[0-9]+ > "
                                                     r"0\.001.*mode to auto"):
        decode_comfy_vae(vae, latent(), tiled_budget(vae), allow_untiled=False, mode="on")


def test_a_check_that_itself_raises_falls_back_and_says_so(vae, fresh_checks, monkeypatch):
    """The core's own decode runs out of memory once, inside the check: mode auto runs the core's decode."""
    module_class = type(vae.first_stage_model)
    original = module_class.decode
    calls = []

    def out_of_memory_once(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(module_class, "decode", out_of_memory_once)
    images, core, notes = decode_in_auto(vae)
    assert torch.equal(images, core)
    assert "the check itself raised RuntimeError: CUDA out of memory" in notes[0], notes


def test_a_decoder_structure_no_replay_knows_falls_back(vae, fresh_checks, monkeypatch):
    """A future core's decoder: every causal conv's `_padding` of a type no known release uses (a subclass of
    this core's int or tuple, so the core's own decode still runs it); no replay may claim it."""
    from wanfit.decode import decode_comfy_vae

    convs = [m for m in vae.first_stage_model.modules() if isinstance(m, torch.nn.Conv3d) and hasattr(m, "_padding")]
    assert convs, "no causal convs: the check would prove nothing"
    for conv in convs:
        future_type = type("FuturePadding", (type(conv._padding),), {})
        monkeypatch.setattr(conv, "_padding", future_type(conv._padding))
    images, core, notes = decode_in_auto(vae)
    assert torch.equal(images, core)
    assert "matches no padding convention WanFit knows" in notes[0], notes
    with torch.inference_mode(), pytest.raises(fresh_checks.ReplayMismatchError, match="no padding convention"):
        decode_comfy_vae(vae, latent(), tiled_budget(vae), allow_untiled=False, mode="on")


def test_the_node_offers_the_modes_the_decode_knows(object_info):
    from wanfit.choices import REPLAY_MODES as DECODE_MODES

    mode = object_info["WanFitVAEDecode"]["input"]["optional"]["mode"]
    assert mode[1]["options"] == list(DECODE_MODES) and mode[1]["default"] == "auto" and "on:" in mode[1]["tooltip"], mode


def test_mode_off_is_the_cores_decode(vae):
    from wanfit.decode import decode_comfy_vae

    with torch.inference_mode():
        images = decode_comfy_vae(vae, latent(), tiled_budget(vae), mode="off")
        core = vae.decode(latent())
    assert torch.equal(images.reshape(core.shape), core)
