"""WAN GGUF files as ComfyUI-GGUF loads them: the quantizations the planner names, what each stores a block
linear as (standard library only). A .gguf file's own tensor table is read by wanfit.models.gguf_header.

ComfyUI-GGUF's `UnetLoaderGGUF` keeps every tensor as the file stores it (a GGMLTensor) and its GGMLOps
dequantize each layer to the compute dtype on every call; its GGUFModelPatcher is a plain ModelPatcher,
so ComfyUI's dynamic VRAM does not place these weights: partial loading does, on every core.

How a WAN GGUF is made (city96/ComfyUI-GGUF tools): convert.py keeps the source's dtype (from a bf16 or fp32
source it keeps 1-D tensors, tensors of at most 1024 values and every `.modulation` in F32), and sets the 5-D
`patch_embedding.weight` aside for fix_5d_tensors.py (F32). The published WAN 2.2 GGUFs are converted from the
fp16 files, so everything but the patch embedding's weight and the block linears is F16 (the planner's formula
gives their tensor bytes to the byte; a bf16-sourced file is about 10 MB larger and is sized from its own
header when connected). Then its patched llama-quantize (tools/lcpp.patch,
LLM_ARCH_WAN) quantizes only the 2-D weights inside the blocks (not modulation, patch, text or time
embeddings, time projection, head), with the mixes of `img_tensor_get_type`: the Q*_K_M files keep the
attention v weights (".v.weight") and the FFN down projection (".ffn.2.weight") in a larger type.
"""

from dataclasses import dataclass

# The header reader and the GGML type table live with the model files (wanfit.models.gguf_header).
from ..models.gguf_header import GGML_TYPE_SIZES, ggml_tensor_bytes


@dataclass(frozen=True)
class GGUFQuant:
    """One GGUF quantization the plan can be told (weight_dtype gguf_<name>): what llama-quantize (ComfyUI-GGUF's
    patch) stores each block linear as."""

    name: str  # the plan's weight_dtype, e.g. "gguf_q4_k_m"
    file_type: str  # llama-quantize's name, e.g. "Q4_K_M"
    block_type: str  # the GGML type of most block linears
    v_type: str = None  # attention v weights (".v.weight"), when the mix differs
    v_first: int = 0  # only the first v_first v weights get v_type (Q4_K_S: 4, Q3_K_M: 2); 0: all of them
    v_later_type: str = None  # the v weights after the first v_first (None: block_type)
    ffn_down_type: str = None  # ".ffn.2.weight", when the mix differs

    def mix_text(self):
        """'Q4_K (attention v Q6_K, FFN down Q6_K)', or the one type."""
        parts = []
        if self.v_type:
            first = f"the first {self.v_first} " if self.v_first else ""
            later = f", later ones {self.v_later_type}" if self.v_later_type else ""
            parts.append(f"{first}attention v {self.v_type}{later}")
        if self.ffn_down_type:
            parts.append(f"FFN down {self.ffn_down_type}")
        return self.block_type + (f" ({', '.join(parts)})" if parts else "")

    def linear_type(self, layer, v_index):
        """The GGML type of block linear `layer` ("blocks.3.self_attn.v"); v_index counts v weights before it."""
        if layer.endswith(".v") and self.v_type:
            if not self.v_first or v_index < self.v_first:
                return self.v_type
            return self.v_later_type or self.block_type
        if layer.endswith(".ffn.2") and self.ffn_down_type:
            return self.ffn_down_type
        return self.block_type


GGUF_QUANTS = {quant.name: quant for quant in (
    GGUFQuant("gguf_f16", "F16", "F16"),
    GGUFQuant("gguf_bf16", "BF16", "BF16"),
    GGUFQuant("gguf_q8_0", "Q8_0", "Q8_0"),
    GGUFQuant("gguf_q6_k", "Q6_K", "Q6_K"),
    GGUFQuant("gguf_q5_k_m", "Q5_K_M", "Q5_K", v_type="Q6_K", ffn_down_type="Q6_K"),
    GGUFQuant("gguf_q5_k_s", "Q5_K_S", "Q5_K"),
    GGUFQuant("gguf_q5_1", "Q5_1", "Q5_1"),
    GGUFQuant("gguf_q5_0", "Q5_0", "Q5_0", ffn_down_type="Q5_1"),
    GGUFQuant("gguf_q4_k_m", "Q4_K_M", "Q4_K", v_type="Q6_K", ffn_down_type="Q6_K"),
    GGUFQuant("gguf_q4_k_s", "Q4_K_S", "Q4_K", v_type="Q5_K", v_first=4, ffn_down_type="Q5_K"),
    GGUFQuant("gguf_q4_1", "Q4_1", "Q4_1"),
    GGUFQuant("gguf_q4_0", "Q4_0", "Q4_0", ffn_down_type="Q4_1"),
    GGUFQuant("gguf_q3_k_m", "Q3_K_M", "Q3_K", v_type="Q5_K", v_first=2, v_later_type="Q4_K", ffn_down_type="Q4_K"),
    GGUFQuant("gguf_q3_k_s", "Q3_K_S", "Q3_K"),
    GGUFQuant("gguf_q2_k", "Q2_K", "Q2_K", v_type="Q3_K"),
)}


def block_linear_bytes(quant, out_features, in_features, layer, v_index):
    """Bytes of one block linear in `quant` (a GGUFQuant): llama-quantize's type, or F16 where the input width is not
    a whole number of the type's blocks (its fallback)."""
    type_name = quant.linear_type(layer, v_index)
    if in_features % GGML_TYPE_SIZES[type_name][0]:
        type_name = "F16"
    return ggml_tensor_bytes(type_name, (out_features, in_features))

