"""One fake ComfyUI checkout on disk, for the tests of what reads a checkout without importing it
(wanfit.core, `python -m wanfit plan --core`, the test command's core lookup)."""


def parser_source(flags):
    """comfy/cli_args.py text whose parser defines exactly `flags`."""
    return "".join(f'parser.add_argument("{flag}")\n' for flag in flags)


def fake_checkout(root, version, cli_args="", model_patcher=None, main=None):
    """A folder that reads as ComfyUI `version`: comfyui_version.py and comfy/cli_args.py always;
    comfy/model_patcher.py and main.py only when given (a checkout without them is a case of its own)."""
    (root / "comfy").mkdir(parents=True)
    (root / "comfyui_version.py").write_text(f'__version__ = "{version}"\n')
    (root / "comfy" / "cli_args.py").write_text(cli_args)
    if model_patcher is not None:
        (root / "comfy" / "model_patcher.py").write_text(model_patcher)
    if main is not None:
        (root / "main.py").write_text(main)
    return root
