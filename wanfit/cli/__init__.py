"""The `python -m wanfit` commands: front doors only; the logic lives in the wanfit core modules."""
