"""Where decisions go once the loop has made them: outputs, each on its own worker thread.

The camera loop never waits for an output: it hands each decision and claim outcome to
every output's bounded queue and goes on with the next frame. A journal fsync per message,
a slow disk or a flood of verify answers therefore costs the loop nothing. Unlocks jump
the queue (a resident is waiting at the door); a full queue drops the message with an
ERROR line (an unlock that cannot be queued is not sent: fail closed). Each worker
survives any exception of its output (logged with the traceback) and reports itself
unhealthy when a single message has been stuck longer than `stuck_s`, so the systemd
watchdog stops and the daemon is restarted instead of silently holding decisions.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

from facegate.decisions import ClaimOutcome, Decision, Prompt

logger = logging.getLogger(__name__)

#: Messages waiting per output; at 10 fps and a few doors this is minutes of backlog.
DEFAULT_QUEUE_SIZE: Final = 2000
#: One message taking longer than this marks the output unhealthy (watchdog stops).
DEFAULT_STUCK_S: Final = 20.0


class Output(ABC):
    """A consumer of decisions (MQTT door bus today; Home Assistant, metrics, audit later).

    Methods run on the output's own worker thread, one at a time, in priority order."""

    name: str = "output"

    @abstractmethod
    def decision(self, decision: Decision) -> None:
        """Publish one decision (and its unlock when granted)."""

    @abstractmethod
    def claim_outcome(self, door: str, outcome: ClaimOutcome) -> None:
        """Publish the answer to a 1:1 verify request."""

    def prompt(self, prompt: Prompt) -> None:  # noqa: B027 - optional hook
        """Show a liveness challenge at the door (action None: clear it); most outputs
        have no display and ignore it."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Flush and release; called once after the worker drained its queue."""


class Priority(IntEnum):
    """Lower goes first."""

    UNLOCK = 0
    DECISION = 1
    CLAIM_OUTCOME = 2
    STOP = 9  # after everything queued before it


@dataclass(order=True)
class _Job:
    priority: Priority
    seq: int
    run: Callable[[], None] | None = field(compare=False)  # None: stop the worker
    what: str = field(compare=False)


class OutputWorker:
    """One output on its own thread behind a bounded priority queue."""

    def __init__(
        self,
        output: Output,
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        stuck_s: float = DEFAULT_STUCK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._output = output
        self._queue: queue.PriorityQueue[_Job] = queue.PriorityQueue(queue_size)
        self._seq = itertools.count()
        self._stuck_s = stuck_s
        self._clock = clock
        self._busy_since: float | None = None
        self._dropped = 0
        self._failed = 0
        self._thread = threading.Thread(
            target=self._work, name=f"output-{output.name}", daemon=True
        )

    @property
    def name(self) -> str:
        return self._output.name

    @property
    def dropped(self) -> int:
        """Messages dropped because the queue was full."""
        return self._dropped

    @property
    def failed(self) -> int:
        """Messages whose output raised."""
        return self._failed

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._thread.start()

    def submit_decision(self, decision: Decision) -> None:
        priority = Priority.UNLOCK if decision.unlock else Priority.DECISION
        self._put(
            priority,
            lambda: self._output.decision(decision),
            f"{decision.kind} decision {decision.event_id} at {decision.door}",
        )

    def submit_prompt(self, prompt: Prompt) -> None:
        # With the decisions: a person waits for it, but an unlock still goes first.
        self._put(
            Priority.DECISION,
            lambda: self._output.prompt(prompt),
            f"prompt {prompt.action} at {prompt.door}",
        )

    def submit_claim_outcome(self, door: str, outcome: ClaimOutcome) -> None:
        self._put(
            Priority.CLAIM_OUTCOME,
            lambda: self._output.claim_outcome(door, outcome),
            f"verify result {outcome.request_id!r} at {door}",
        )

    def healthy(self) -> bool:
        """Alive, and not stuck on one message for longer than `stuck_s`."""
        if not self._thread.is_alive():
            return False
        busy_since = self._busy_since
        return busy_since is None or self._clock() - busy_since < self._stuck_s

    def close(self, timeout_s: float = 10.0) -> None:
        """Drain what is queued (bounded by `timeout_s`), then close the output."""
        if self._thread.is_alive():
            try:
                self._queue.put(
                    _Job(Priority.STOP, next(self._seq), None, "stop"), timeout=timeout_s
                )
            except queue.Full:
                logger.error("output %s: queue full at shutdown; closing anyway", self.name)
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                logger.error("output %s did not drain in %.0f s", self.name, timeout_s)
        try:
            self._output.close()
        except Exception:
            logger.exception("output %s failed to close", self.name)

    def _put(self, priority: Priority, run: Callable[[], None], what: str) -> None:
        try:
            self._queue.put_nowait(_Job(priority, next(self._seq), run, what))
        except queue.Full:
            self._dropped += 1
            outcome = "NOT sent (fail closed)" if priority is Priority.UNLOCK else "dropped"
            logger.error("output %s: queue full, %s %s", self.name, what, outcome)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job.run is None:
                return
            self._busy_since = self._clock()
            try:
                job.run()
            except Exception:
                # Supervision: one bad message never ends the worker.
                self._failed += 1
                logger.exception("output %s failed on %s", self.name, job.what)
            finally:
                self._busy_since = None
