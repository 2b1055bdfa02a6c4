"""Samples taken while the GPU reported throttling are discarded and retaken once the clocks recover, as nvbench
does: at most THROTTLE_RETAKES batches a point, each wait at most THROTTLE_RECOVERY_S; past that the samples
stand and the row's throttle column says so. The backend says what throttles it (``throttled()``, NVML's reasons
other than idle and its violation counters) and waits on the host (``sleep``); a backend without them retakes
nothing. Only transient reasons are retaken (heat, a hardware slowdown, the power brake: the reasons that make a
row unsteady in analysis.frames): a power cap is the card's steady state under a long kernel, would come back in
every batch, and the row keeps it as the card's figure."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

THROTTLE_RETAKES = 4  # batches taken while the GPU reported throttling that are discarded and retaken, at most
THROTTLE_RECOVERY_S = 0.5  # host time to wait for the clocks to recover before a retake, at most
THROTTLE_POLL_S = 0.01
TRANSIENT = frozenset({"hw_slowdown", "sw_thermal", "hw_thermal", "hw_power_brake", "thermal"})  # retaken


@dataclass
class Retakes:
    """Samples taken while the GPU reported throttling: discarded, and retaken once the clocks recover (as nvbench
    does), at most THROTTLE_RETAKES batches a point; past that the samples stand and the row's throttle says so."""

    backend: Any  # bench.timing.Backend
    retakes: int = 0
    discarded: int = 0
    reasons: set = dataclasses.field(default_factory=set)
    clean: bool = True  # every kept batch was checked and found unthrottled

    def _now(self) -> str:
        ask = getattr(self.backend, "throttled", None)
        return " ".join(sorted(set(ask().split()) & TRANSIENT)) if callable(ask) else ""



    def start(self) -> None:
        self._now()  # forget what was reported before sampling began (warm-up, the graph's upload)

    def discard(self, count: int) -> bool:
        """Whether the batch of ``count`` samples just taken must be retaken; waits for the clocks if so."""
        reason = self._now()
        if not reason:
            return False
        if self.retakes >= THROTTLE_RETAKES:  # used up: the throttled batch stands
            self.clean = False
            return False
        self.retakes += 1
        self.discarded += count
        self.reasons |= set(reason.split())
        sleep = getattr(self.backend, "sleep", None)
        began = self.backend.host_time()
        while callable(sleep) and self.backend.host_time() - began < THROTTLE_RECOVERY_S:
            sleep(THROTTLE_POLL_S)
            if not self._now():
                break
        return True
