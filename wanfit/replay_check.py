"""The one check both replays of ComfyUI internals run before they replace the core's own code.

Why: the lean block forward (lean_forward.py) and the tiled VAE decode (decode/) replay code that
ComfyUI changes between releases. A version table cannot know a release nobody tested, so before the
first replayed run of a key (core, module class, dtypes, device, ...) in a process, the replay and the
core's own code run on the user's own module and a small input, and the verdict is kept for the process.

One mode policy for both nodes: auto runs the core's own path where the check failed and says so; on
raises ReplayMismatchError naming the core, the check and the difference; off replays nothing (no check).
"""

from dataclasses import dataclass
import logging
import math

from .choices import REPLAY_MODES as MODES
from .core import running_core_version
from .errors import InvalidInputError, WanFitError

log = logging.getLogger("wanfit")


class ReplayMismatchError(WanFitError):
    """A replay does not reproduce this core's own code (mode on refuses to run it)."""


@dataclass(frozen=True)
class ReplayCheck:
    """One comparison of a replay with the core's own code on the same module and input."""

    replay: str  # "lean forward", "tiled decode"
    against: str  # what of the core it was compared with, e.g. "the core's own block"
    core: str  # the ComfyUI version that ran it (core.running_core_version)
    subject: str  # the module, dtypes and device compared, for reports
    key: tuple  # (replay, core, ...): everything that changes the arithmetic; the cache key
    passed: bool
    difference: float  # the replay's own measure (relative or absolute); inf when nothing comparable ran
    tolerance: float
    detail: str  # how far apart, or what went wrong
    matched: object = None  # what the check picked where a replay has variants (the decode's CoreProtocol)

    def describe(self):
        where = f"ComfyUI {self.core}, {self.subject}"
        if self.passed:
            return f"{self.replay} checked against {self.against} ({where}): {self.detail}"
        return f"{self.replay} check against {self.against} failed ({where}): {self.detail}"


_checks = {}  # ReplayCheck.key -> ReplayCheck, once per process


def check_once(replay, against, subject, key, tolerance, compare, core=None, on_new=None):
    """The process's ReplayCheck for (replay, core, *key); runs compare() on first use. Never raises.

    compare() -> (difference, detail, matched); the check passes when difference <= tolerance. A compare
    that raises (an OOM on a small card, a signature the replay does not know) is a failed check.
    on_new(check) hears a check that has just run (a node shows it while the run goes on).
    """
    core = core or running_core_version()
    full_key = (replay, core, *key)
    if full_key in _checks:
        return _checks[full_key]
    try:
        difference, detail, matched = compare()
    except Exception as error:  # noqa: BLE001 - the check itself failing is a verdict, not a crash
        difference, matched = math.inf, None
        detail = f"the check itself raised {type(error).__name__}: {str(error)[:300]}"
    passed = difference <= tolerance  # NaN compares false: a NaN difference fails
    check = ReplayCheck(replay, against, core, subject, full_key, passed, difference, tolerance, detail,
                        matched if passed else None)
    _checks[full_key] = check
    (log.info if passed else log.warning)("WanFit %s", check.describe())
    if on_new is not None:
        on_new(check)
    return check


def cached_checks(replay=None):
    """Every check run in this process (of one replay, when named), oldest first: reports and tests read them."""
    return [check for check in _checks.values() if replay is None or check.replay == replay]


def find_check(replay, core, key):
    """The process's check under exactly the key check_once would use, or None: a report quotes the check of
    the module it runs on, never one of another module that shares its core and class."""
    return _checks.get((replay, core, *key))


def forget_checks():
    """Drop every verdict, so the next replayed run checks again (tests and bench/replay_check_cost.py)."""
    _checks.clear()


def validate_mode(mode):
    if mode not in MODES:
        raise InvalidInputError("mode", mode, " / ".join(MODES), "pick one of the listed modes")
    return mode


def follow(check, mode, node, core_path):
    """True: run the replay. False (mode auto after a failed check): run the core's own path and report
    fallback_note. Mode on after a failed check: ReplayMismatchError. core_path names what auto runs
    instead ("ComfyUI's own blocks")."""
    if check.passed:
        return True
    if mode == "on":
        raise ReplayMismatchError(f"{node} (mode on): {check.describe()}. Fix: set the node's mode to auto "
                                  f"(it then runs {core_path}) or off.")
    return False


def fallback_note(check, core_path):
    """The one report line for mode auto after a failed check."""
    return f"{check.describe()}; instead: {core_path}"
