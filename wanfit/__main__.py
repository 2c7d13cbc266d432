"""`python -m wanfit <command>`: each command lives in its own module with a `main(argv)`."""

import importlib
import sys

COMMANDS = {
    "demo": ("wanfit.cli.demo", "run the TI2V-5B workflow once through a real ComfyUI (tiny models if none)"),
    "device": ("wanfit.cli.device", "print what this machine offers (GPU, VRAM, RAM, attention backends)"),
    "plan": ("wanfit.cli.plan", "print the offload plan / ComfyUI launch flags for a model and job size"),
    "models": ("wanfit.cli.models", "list, check and download the official WAN 2.2 model files"),
    "doctor": ("wanfit.cli.doctor", "which attention backend would run here, and how to install sageattention"),
    "run": ("wanfit.cli.run",
            "fill a shipped workflow, submit it to ComfyUI's /prompt, follow progress, download the video"),
    "worker-start": ("wanfit.cli.worker_start", "RunPod worker start step: flags, models on the volume, then ComfyUI"),
}


def usage():
    lines = ["usage: python -m wanfit <command> [options]", "", "commands:"]
    lines += [f"  {name:<8} {help_text}" for name, (_, help_text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name = COMMANDS[command][0]
    if __package__:
        module_name = __package__ + module_name[len("wanfit"):]
    module = importlib.import_module(module_name)
    return module.main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
