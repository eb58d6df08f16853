"""Stop-sequence matching over streamed text, holding back only what could still match."""

from __future__ import annotations

from collections.abc import Sequence


class StopScanner:
    """Feed text; get back what is safe to emit, and the stop sequence once one matches."""

    def __init__(self, stop_sequences: Sequence[str] | None) -> None:
        self.stops = [s for s in (stop_sequences or []) if s]
        self._held = ""
        self.matched: str | None = None

    def feed(self, text: str) -> str:
        """Text that can be emitted now; sets ``matched`` when a stop sequence appears."""
        if not self.stops:
            return text
        buffer = self._held + text
        first: tuple[int, str] | None = None
        for stop in self.stops:
            at = buffer.find(stop)
            if at != -1 and (first is None or at < first[0]):
                first = (at, stop)
        if first is not None:
            self.matched = first[1]
            self._held = ""
            return buffer[: first[0]]
        keep = self._longest_partial(buffer)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """Whatever was held back, once generation ended without a match."""
        held, self._held = self._held, ""
        return held

    def _longest_partial(self, buffer: str) -> int:
        """Length of the longest suffix of ``buffer`` that begins some stop sequence."""
        best = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(buffer)), best, -1):
                if buffer.endswith(stop[:size]):
                    best = size
                    break
        return best
