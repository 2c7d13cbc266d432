"""Shared by both tiers: hypothesis explores locally but replays the same examples in CI."""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
