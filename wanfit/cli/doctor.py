"""`python -m wanfit doctor [--mode MODE] [--verify]`: which attention backend would run here, why, and how to get sage."""

import argparse

from ..attention import MODES, KERNELS, install_hint, probe_capabilities, resolve_attention


def main(argv):
    parser = argparse.ArgumentParser(prog="python -m wanfit doctor", description=__doc__)
    parser.add_argument("--mode", default="auto", choices=MODES, help="attention mode to check (default auto)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip running the kernel against SDPA on the GPU (verification takes a second)")
    args = parser.parse_args(argv)

    caps = probe_capabilities(refresh=True)
    kernel, _, selection = resolve_attention(args.mode, caps, verify=not args.no_verify)
    if caps.cuda_available:
        print(f"GPU: {caps.device_name} ({caps.arch})")
    else:
        print(f"GPU: none ({caps.device_name}); torch {caps.torch_version}")
    print(f"sageattention: {caps.sage_version or 'not installed'}; "
          f"sageattn3: {'installed' if caps.sage3_installed else 'not installed'}; "
          f"triton: {caps.triton_version or 'not installed'}")
    print(f"mode: {args.mode}")
    if selection.uses_kernel:
        spec = KERNELS[selection.kernel_name]
        print(f"backend: sageattention {selection.kernel_name} ({spec.description})")
    else:
        print("backend: PyTorch SDPA (ComfyUI's own attention; WanFit falls back to it)")
    print(f"reason: {selection.reason}")
    print()
    print(install_hint(caps))
    return 0
