"""Capped exponential backoff as a pure value, so tests assert delays instead of sleeping."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays min_s, min_s*factor, min_s*factor**2, ... capped at max_s; `reset()` on success."""

    min_s: float = 0.5
    max_s: float = 30.0
    factor: float = 2.0
    _attempt: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.min_s <= self.max_s:
            raise ValueError(f"need 0 < min_s <= max_s, got {self.min_s} and {self.max_s}")
        if self.factor < 1:
            raise ValueError(f"factor must be >= 1, got {self.factor}")

    def next_delay(self) -> float:
        """The delay before the next retry, in seconds."""
        delay = self.min_s * self.factor**self._attempt
        if delay < self.max_s:
            self._attempt += 1  # stop growing once capped: no float overflow after days down
            return delay
        return self.max_s

    def reset(self) -> None:
        self._attempt = 0
