"""Stop sequences are found across token boundaries and hold back only possible prefixes."""

from workers.stops import StopScanner


def feed_all(scanner, pieces):
    return "".join(scanner.feed(p) for p in pieces)


def test_match_across_pieces_cuts_before_the_sequence():
    """A stop sequence split over deltas still stops, with the text before it emitted."""
    scanner = StopScanner(["END"])
    out = feed_all(scanner, ["abc E", "N", "D tail"])
    assert out == "abc "
    assert scanner.matched == "END"


def test_text_is_held_back_only_while_it_could_match():
    """A partial prefix is held, then released when it cannot match any more."""
    scanner = StopScanner(["END"])
    assert scanner.feed("abE") == "ab"
    assert scanner.feed("x") == "Ex"
    assert scanner.matched is None


def test_flush_releases_the_held_tail():
    """At the end, held text is not lost."""
    scanner = StopScanner(["\n\n"])
    assert scanner.feed("line\n") == "line"
    assert scanner.flush() == "\n"


def test_earliest_of_several_sequences_wins():
    """With several sequences, the first occurrence in the text decides."""
    scanner = StopScanner(["zz", "b"])
    assert scanner.feed("abzz") == "a"
    assert scanner.matched == "b"


def test_without_sequences_text_passes_through():
    """No stop sequences: nothing is held."""
    scanner = StopScanner(None)
    assert scanner.feed("abc") == "abc" and scanner.flush() == ""
