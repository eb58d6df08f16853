"""Upstream usage that arrives only at the end still becomes the message's usage."""

from shared.accumulator import accumulate
from tests.unit.test_generation import REQUEST, ListSink
from workers.generation import run_generation
from workers.providers.base import Finished, Started, TextDelta


class LateUsageProvider:
    """Like an OpenAI-compatible server: the prompt count comes with the last chunk."""

    def stream(self, request, max_tokens):
        yield Started(input_tokens=0, model="up")
        yield TextDelta("Hi")
        yield Finished("end_turn", output_tokens=1, input_tokens=11)


def test_a_late_prompt_count_reaches_message_delta_status_and_message():
    """message_delta carries the corrected input_tokens, so the status and the Message agree with it."""
    sink = ListSink()
    run_generation("m", REQUEST, LateUsageProvider(), sink, max_tokens=5)
    delta = next(e for e in sink.events if e["type"] == "message_delta")
    assert delta["usage"] == {"output_tokens": 1, "input_tokens": 11}
    assert sink.fields["input_tokens"] == 11
    assert accumulate(sink.events)["usage"]["input_tokens"] == 11
