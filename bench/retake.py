"""Samples taken while the GPU reported throttling are discarded and retaken once the clocks recover, as nvbench
does: at most THROTTLE_RETAKES batches a point, each wait at most THROTTLE_RECOVERY_S; past that the samples
stand and the row's throttle column says so. The backend says what throttles it (``throttled()``, NVML's reasons
other than idle) and waits on the host (``sleep``); a backend without them retakes nothing."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

THROTTLE_RETAKES = 4  # batches taken while the GPU reported throttling that are discarded and retaken, at most
THROTTLE_RECOVERY_S = 0.5  # host time to wait for the clocks to recover before a retake, at most
THROTTLE_POLL_S = 0.01


@dataclass
class Retakes:
    """Samples taken while the GPU reported throttling: discarded, and retaken once the clocks recover (as nvbench
    does), at most THROTTLE_RETAKES batches a point; past that the samples stand and the row's throttle says so."""

    backend: Any  # bench.timing.Backend
    retakes: int = 0
    discarded: int = 0
    reasons: set = dataclasses.field(default_factory=set)

    def _now(self) -> str:
        ask = getattr(self.backend, "throttled", None)
        return ask() if callable(ask) else ""

    def start(self) -> None:
        self._now()  # forget what was reported before sampling began (warm-up, the graph's upload)

    def discard(self, count: int) -> bool:
        """Whether the batch of ``count`` samples just taken must be retaken; waits for the clocks if so."""
        reason = self._now()
        if not reason or self.retakes >= THROTTLE_RETAKES:
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
