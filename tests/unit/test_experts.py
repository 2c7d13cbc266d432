from types import SimpleNamespace

import pytest
import torch

from wanfit.experts import release_model, released_generation, remember_source, should_release, source_path


@pytest.mark.parametrize("mode, drop, expected", [
    ("auto", True, True), ("auto", False, False), ("auto", None, False),
    ("always", False, True), ("never", True, False),
])
def test_release_follows_the_plan_unless_forced(mode, drop, expected):
    plan = None if drop is None else SimpleNamespace(drop_high_noise_expert_before_low=drop)
    release, reason = should_release(mode, plan)
    assert release is expected and reason


class Patcher:
    """The parts of a ComfyUI ModelPatcher that release_model touches."""

    def __init__(self, model):
        self.model = model
        self.model_options = {}

    def model_size(self):
        return sum(p.numel() * p.element_size() for p in self.model.parameters())


def test_release_unloads_clones_frees_weights_and_moves_the_generation_on(tmp_path):
    base = torch.nn.Linear(64, 64)
    patcher, clone = Patcher(base), Patcher(base)
    remember_source(patcher, tmp_path / "high.safetensors")
    unloaded = []
    loaded = [SimpleNamespace(model=clone, model_unload=lambda: unloaded.append("clone")),
              SimpleNamespace(model=Patcher(torch.nn.Linear(2, 2)), model_unload=lambda: unloaded.append("other"))]
    management = SimpleNamespace(current_loaded_models=loaded, soft_empty_cache=lambda: None)
    before = released_generation(str(tmp_path / "high.safetensors"))

    freed = release_model(patcher, management)

    assert freed == (64 * 64 + 64) * 4
    assert unloaded == ["clone"] and len(management.current_loaded_models) == 1
    assert base.weight.device.type == "meta"
    assert source_path(patcher) == str(tmp_path / "high.safetensors")
    assert released_generation(str(tmp_path / "high.safetensors")) == before + 1


class DynamicPatcher(Patcher):
    """0.33's ModelPatcherDynamic: weights pinned in RAM, mapped through per-device virtual buffers."""

    def __init__(self, model):
        super().__init__(model)
        self.unpinned = False

    def is_dynamic(self):
        return True

    def unpin_all_weights(self):
        self.unpinned = True


def test_release_of_a_dynamic_vram_model_unpins_its_ram_and_drops_its_virtual_buffers():
    base = torch.nn.Linear(8, 8)
    base.dynamic_vbars = {"cuda:0": object()}
    patcher = DynamicPatcher(base)
    management = SimpleNamespace(current_loaded_models=[], soft_empty_cache=lambda: None)

    release_model(patcher, management)

    assert patcher.unpinned and base.dynamic_vbars == {}
    assert base.weight.device.type == "meta"
