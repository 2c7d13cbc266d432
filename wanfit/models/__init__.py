"""Model files: what a file is (from its safetensors header alone), whether it fits the slot, where it is,
and the official files (manifest.json). The loaders, `python -m wanfit models` and the RunPod worker
all import from here.

headers      read and check a safetensors header; paths that are no regular file
detection    which WAN 2.2 file a header is (ModelInfo), the variant of a loaded model
checks       the loaders' gates: diffusion model, A14B expert pair, VAE, text encoder; a WAN GGUF for
             ComfyUI-GGUF's loader
core_support whether the running ComfyUI loads a file's quantized format (its QUANT_ALGOS)
manifest     the official files (manifest.json) and the missing-file error
presence     where ComfyUI finds a file; a workflow's slots; the download header check
manager_list the manifest in ComfyUI-Manager's model-list.json format
quantization ComfyUI's native quantization of a diffusion model (QuantizationInfo), from the header
load_options the weight dtype and text-encoder device a loader asks ComfyUI for
"""

from .checks import (ExpertPair, GGUFModel, check_diffusion_model, check_expert_pair, check_gguf_diffusion_model,
                     check_expert, check_loadable_diffusion_model, check_loadable_expert_pair,
                     check_low_noise_expert, expert_info, check_text_encoder, check_vae_file, check_vae_for_model,
                     noise_level_hint)
from .core_support import (CoreQuantSupport, CoreVerdict, check_loads_on_core, core_verdict, running_core_support,
                           support_of)
from .detection import VARIANT_TITLES, ModelInfo, WanDims, detect_variant, model_variant_of
from .errors import DOWNLOAD_HINT, MissingModelError, ModelFileError, ModelMismatchError
from .headers import (WANFIT_MAX_HEADER_BYTES, SafetensorsHeader, TensorEntry, describe_special_file,
                      not_a_regular_file_error, read_safetensors_header, special_file_in)
from .manager_list import manager_model_list
from .manifest import load_manifest, manifest_entry, missing_model_error
from .quantization import QUANT_FORMATS, UNKNOWN_UNTIL_LOADED, FormatUse, QuantizationInfo, read_quantization
from .presence import (SlotStatus, check_present_file, find_model_file, header_verifier, resolve_model_path,
                       workflow_status)
