"""JSON Schema → GBNF: integer ranges, patterns, refusals with paths, and bounded cost."""

from __future__ import annotations

import json
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.grammar import GrammarError, SchemaLimits, SchemaTooCostly, schema_hash, schema_to_gbnf
from shared.grammar.ranges import LIMIT, integer_range
from tests.grammar_engine import GrammarEngine


@pytest.fixture(scope="module")
def engine():
    loaded = GrammarEngine()
    yield loaded
    loaded.close()


def _regex(expression: str) -> re.Pattern[str]:
    """A range expression read as a Python regex (it uses only literals, digit classes and groups)."""
    return re.compile(expression.replace('"', "").replace(" ", ""))


@settings(max_examples=200, deadline=None)
@given(st.integers(-2000, 2000), st.integers(0, 2500))
def test_integer_range_accepts_exactly_the_range(low, width):
    """Every integer in a window around [low, low+width] matches iff it lies in the range."""
    high = low + width
    matcher = _regex(integer_range(low, high))
    for n in range(low - 30, high + 31, max(1, width // 200)):
        assert bool(matcher.fullmatch(str(n))) == (low <= n <= high), (low, high, n)
    for n in (low, high):
        assert matcher.fullmatch(str(n))


@settings(max_examples=100, deadline=None)
@given(st.integers(-(10**15), 10**15), st.booleans())
def test_half_open_integer_ranges(bound, is_low):
    """A range open on one side holds every integer on its side (up to 16 digits), none on the other."""
    matcher = _regex(integer_range(bound, None) if is_low else integer_range(None, bound))
    for n in (bound - 1, bound, bound + 1, bound + 12345, bound - 12345, LIMIT, -LIMIT, 0):
        inside = n >= bound if is_low else n <= bound
        assert bool(matcher.fullmatch(str(n))) == (inside and abs(n) <= LIMIT), (bound, is_low, n)


def test_range_spells_canonical_integers_only():
    """No leading zeros and no -0: the grammar spells each integer one way."""
    matcher = _regex(integer_range(-50, 50))
    assert not matcher.fullmatch("007") and not matcher.fullmatch("-0") and matcher.fullmatch("0")


def test_llama_cpp_accepts_exactly_the_bounded_integers(engine):
    """Checked by llama.cpp's own grammar sampler: minimum/maximum and the exclusive forms hold."""
    cases = [
        ({"type": "integer", "minimum": 18, "maximum": 21}, range(18, 22)),
        ({"type": "integer", "exclusiveMinimum": -3, "exclusiveMaximum": 12}, range(-2, 12)),
        ({"type": "integer", "minimum": 95, "maximum": 105.5}, range(95, 106)),
    ]
    for schema, expected in cases:
        gbnf = schema_to_gbnf(schema)
        accepted = [n for n in range(-40, 140) if engine.accepts(gbnf, str(n))]
        assert accepted == list(expected), schema


def test_integer_property_with_bounds_in_an_object(engine):
    """{"age": 18..21} inside an object: the engine takes 18 and 21, refuses 17, 22 and 1.5e1."""
    schema = {
        "type": "object",
        "properties": {"age": {"type": "integer", "minimum": 18, "maximum": 21}},
        "required": ["age"],
    }
    gbnf = schema_to_gbnf(schema)
    assert engine.accepts(gbnf, '{"age": 18}') and engine.accepts(gbnf, '{"age": 21}')
    for bad in ('{"age": 17}', '{"age": 22}', '{"age": 1.5e1}', '{"age": 019}'):
        assert not engine.accepts(gbnf, bad), bad


def test_optional_properties_and_lengths(engine):
    """Optional properties in order, any subset; string lengths counted in characters."""
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "string", "minLength": 1, "maxLength": 3},
            "b": {"type": "boolean"},
            "c": {"enum": ["x", 2]},
        },
        "additionalProperties": False,
    }
    gbnf = schema_to_gbnf(schema)
    for good in ("{}", '{"a": "é\\n"}', '{"b": true, "c": 2}', '{"a": "xyz", "b": false, "c": "x"}'):
        assert engine.accepts(gbnf, good), good
    for bad in ('{"a": ""}', '{"a": "abcd"}', '{"c": 3}', '{"b": true,}', '{"d": 1}', '{"a": "\x01"}'):
        assert not engine.accepts(gbnf, bad), bad


@pytest.mark.parametrize(
    ("pattern", "good", "bad"),
    [
        (r"^\d{3}-[A-Z]{2}$", ["123-AB"], ["12-AB", "123-ab", "1234-AB"]),
        (r"^(cat|dog)s?$", ["cat", "dogs"], ["cow", "catss"]),
        (r'^[^"]+$', ["a b"], ['a\\"b']),
        (r"^a\.b\\c$", ["a.b\\\\c"], ["axb\\\\c"]),
    ],
)
def test_patterns_through_llama_cpp(engine, pattern, good, bad):
    """A pattern's grammar takes its matches (JSON-escaped) and nothing else."""
    gbnf = schema_to_gbnf({"type": "string", "pattern": pattern})
    for text in good:
        assert engine.accepts(gbnf, f'"{text}"'), text
    for text in bad:
        assert not engine.accepts(gbnf, f'"{text}"'), text


@pytest.mark.parametrize(
    ("schema", "path"),
    [
        ({"type": "number", "minimum": 0}, ("minimum",)),
        ({"type": "integer", "multipleOf": 5}, ("multipleOf",)),
        (
            {"properties": {"a": {"type": "number", "exclusiveMaximum": 1}}},
            ("properties", "a", "exclusiveMaximum"),
        ),
        ({"type": "integer", "minimum": 5, "maximum": 4}, ("minimum",)),
        ({"type": "integer", "maximum": 10**20}, ("maximum",)),
        ({"type": "array", "uniqueItems": True}, ("uniqueItems",)),
        ({"type": "string", "pattern": "(?=a)b"}, ("pattern",)),
        ({"$ref": "#/$defs/none"}, ("$ref",)),
    ],
)
def test_what_a_grammar_cannot_enforce_is_refused_at_its_keyword(schema, path):
    """Bounds on numbers, multipleOf, impossible ranges... are refused, naming the keyword's path."""
    with pytest.raises(GrammarError) as caught:
        schema_to_gbnf(schema)
    assert caught.value.path == path, caught.value


@pytest.mark.parametrize(
    ("schema", "path", "setting"),
    [
        ({"type": "string", "maxLength": 50_000_000}, ("maxLength",), "SLUICE_SCHEMA_MAX_REPEAT"),
        (
            {"items": {"type": "string", "pattern": "^a{99999}$"}},
            ("items", "pattern"),
            "SLUICE_SCHEMA_MAX_REPEAT",
        ),
        ({"type": "array", "minItems": 5000}, ("minItems",), "SLUICE_SCHEMA_MAX_REPEAT"),
        ({"properties": {f"p{i}": {} for i in range(300)}}, ("properties",), "SLUICE_SCHEMA_MAX_PROPERTIES"),
        ({"anyOf": [{"type": "null"}] * 3000}, ("anyOf", 999), "SLUICE_SCHEMA_MAX_NODES"),
    ],
)
def test_costly_schemas_are_refused_at_the_keyword_in_milliseconds(schema, path, setting):
    """Every cap names its keyword's path and its setting; the pre-pass does no grammar work."""
    started = time.perf_counter()
    with pytest.raises(SchemaTooCostly) as caught:
        schema_to_gbnf(schema)
    assert caught.value.path == path and setting in str(caught.value)
    assert time.perf_counter() - started < 1  # a generous bound: the measured cost is ~1 ms


def test_depth_through_refs_is_capped():
    """A chain of $refs deeper than the cap is refused, not a RecursionError."""
    defs = {f"d{i}": {"type": "array", "items": {"$ref": f"#/$defs/d{i + 1}"}} for i in range(200)}
    defs["d200"] = {"type": "null"}
    with pytest.raises(SchemaTooCostly, match="SLUICE_SCHEMA_MAX_DEPTH"):
        schema_to_gbnf({"$ref": "#/$defs/d0", "$defs": defs})


def test_grammar_size_cap_counts_repetitions_written_out():
    """Long strings of distinct lengths add up (one shared length is written out once)."""
    distinct = {"properties": {f"s{i}": {"type": "string", "maxLength": 1000 - i} for i in range(20)}}
    shared = {"properties": {f"s{i}": {"type": "string", "maxLength": 1000} for i in range(20)}}
    small = SchemaLimits(max_grammar_bytes=50_000)
    schema_to_gbnf(shared, small)
    with pytest.raises(SchemaTooCostly, match="SLUICE_GRAMMAR_MAX_BYTES"):
        schema_to_gbnf(distinct, small)


def test_optional_properties_cost_linear_space(engine):
    """200 optional properties: the grammar grows linearly (the old converter's was quadratic)."""

    roomy = SchemaLimits(max_properties=1000)

    def size(n: int) -> int:
        return len(schema_to_gbnf({"properties": {f"p{i}": {"type": "integer"} for i in range(n)}}, roomy))

    assert size(400) < 2.5 * size(200)
    gbnf = schema_to_gbnf({"properties": {f"p{i}": {"type": "integer"} for i in range(200)}}, roomy)
    assert engine.loads(gbnf)
    assert engine.accepts(gbnf, '{"p3": 1, "p150": 2}') and not engine.accepts(gbnf, '{"p150": 2, "p3": 1}')


def test_recursive_schema_and_formats_load_in_llama_cpp(engine):
    """A recursive $ref, allOf, type lists and formats convert to grammars llama.cpp loads."""
    schema = {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
            }
        },
        "allOf": [
            {"$ref": "#/$defs/node"},
            {"properties": {"when": {"type": "string", "format": "date-time"}}},
        ],
        "properties": {"id": {"type": ["integer", "null"], "minimum": 1}},
    }
    gbnf = schema_to_gbnf(schema)
    assert engine.accepts(gbnf, '{"kids": [{"kids": []}], "when": "2026-11-30T01:02:03Z"}')
    assert not engine.accepts(gbnf, '{"when": "yesterday"}')


def test_schema_hash_ignores_key_order():
    """The cache key is the same for the same schema written in another key order."""
    assert schema_hash(json.loads('{"a": 1, "b": [2]}')) == schema_hash({"b": [2], "a": 1})


EDGES = [
    {"type": "object", "properties": {}, "additionalProperties": False},
    {"type": "object", "properties": {"a": False}},
    {"type": "object", "properties": {"a": True}, "required": ["a"]},
    {"type": "object", "additionalProperties": {"type": "integer"}},
    {
        "properties": {"a b/c~": {"type": "null"}, "": {"type": "null"}, "é": {"type": "null"}},
        "required": ["", "é"],
    },
    {"type": "string", "pattern": ""},
    {"type": "string", "pattern": "a|"},
    {"type": "string", "pattern": "(|a)"},
    {"type": "string", "pattern": "[\\]\\-^]"},
    {"type": "string", "pattern": "[^\\d]"},
    {"type": "string", "pattern": "\\u00e9{2}x{0}a{2,}{"},
    {"type": "string", "minLength": 0, "maxLength": 0},
    {"type": "array", "maxItems": 0},
    {"type": "array", "prefixItems": []},
    {"enum": ['a"b', "c\\d", "\n", 1.5, {"x": [1]}, None]},
    {"type": ["string", "integer"], "minimum": 3, "maxLength": 2},
    {"type": "integer", "minimum": -(10**16) + 1},
    {"type": "string", "format": "uuid"},
    {"allOf": [{"type": "string"}, {"maxLength": 3}]},
    {
        "oneOf": [
            {"type": "object", "properties": {"k": {"const": "a"}}},
            {"type": "array", "items": {"$ref": "#"}},
        ]
    },
    {"$defs": {"n": {"type": "object", "properties": {"next": {"$ref": "#/$defs/n"}}}}, "$ref": "#/$defs/n"},
    True,
    {},
]


@pytest.mark.parametrize("schema", EDGES, ids=[json.dumps(s)[:40] for s in EDGES])
def test_edge_schemas_give_grammars_llama_cpp_loads(engine, schema):
    """Edge cases (empty objects, escapes, empty branches, recursion...) convert to loadable grammars."""
    assert engine.loads(schema_to_gbnf(schema))


@pytest.mark.parametrize(
    ("schema", "path"),
    [
        ({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}, ("$defs", "a", "$ref")),
        ({"anyOf": [{"$ref": "#"}, {"type": "null"}]}, ("anyOf", 0, "$ref")),
        ({"$defs": {"a": {"$ref": "#/$defs/a"}}, "allOf": [{"$ref": "#/$defs/a"}]}, ("$defs", "a", "$ref")),
        (
            {"$defs": {"a": {"type": "number", "minimum": 1}}, "items": {"$ref": "#/$defs/a"}},
            ("$defs", "a", "minimum"),
        ),
        ({"allOf": [{"type": "string"}, {"type": "integer"}]}, ("allOf", 1, "type")),
        (False, ()),
    ],
)
def test_degenerate_schemas_are_refused_where_written(schema, path):
    """Left recursion, contradictions and problems inside $defs are refused where they are written."""
    with pytest.raises(GrammarError) as caught:
        schema_to_gbnf(schema)
    assert caught.value.path == path, caught.value
