"""The token endpoint's body, read strictly: every kind of refusal, each naming its field."""

import json

import pytest

from apps.issuance.contract import IssuanceError
from apps.issuance.request_body import MAX_DEPTH, json_object


def refusal(raw: bytes) -> tuple[str, str]:
    with pytest.raises(IssuanceError) as raised:
        json_object(raw)
    error = raised.value
    assert (error.code, error.http_status) == ("invalid_request", 400)
    assert error.message.startswith(f"{error.extra['field']}: ")
    return error.extra["field"], error.message


def test_a_plain_object_comes_back_as_dicts_and_lists():
    raw = '{"profile": "voice", "end_user": "ü-7 😀", "n": [1, 2.5, {"x": null}], "b": true}'

    assert json_object(raw.encode()) == json.loads(raw)


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        ('{"profile": "p"}'.encode("utf-16"), "body", "UTF-16"),
        ('{"profile": "p"}'.encode("utf-16-le"), "body", "UTF-16"),
        ('{"profile": "p"}'.encode("utf-16-be"), "body", "UTF-16"),
        ('{"profile": "p"}'.encode("utf-32"), "body", "UTF-16"),
        (b'\xef\xbb\xbf{"profile": "p"}', "body", "byte order mark"),
        (b'{"profile": "caf\xe9"}', "body", "not valid UTF-8"),
        (b'{"profile": "\xed\xa0\x80"}', "body", "not valid UTF-8"),  # an encoded surrogate
        (b"", "body", "empty"),
        (b"[]", "body", "JSON object"),
        (b'"profile"', "body", "JSON object"),
        (b"null", "body", "JSON object"),
        (b"{nope", "body", "not valid JSON"),
        (b'{"a": 1' + b"1" * 5000 + b"}", "body", "too long"),
    ],
    ids=[
        "utf-16-bom",
        "utf-16-le",
        "utf-16-be",
        "utf-32",
        "utf-8-bom",
        "latin-1",
        "cesu-surrogate",
        "empty",
        "array",
        "string",
        "null",
        "bad-json",
        "huge-integer",
    ],
)
def test_a_body_that_is_not_one_utf8_json_object_is_refused(raw, field, words):
    assert refusal(raw)[0] == field
    assert words in refusal(raw)[1]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"profile": "a", "profile": "b"}', "profile"),
        (b'{"a": {"b": [0, {"c": 1, "c": 1}]}}', "a.b.1.c"),
        (b'{"": 1, "": 2}', '""'),
    ],
)
def test_a_duplicate_key_is_refused_by_its_path(raw, field):
    assert refusal(raw) == (field, f"{field}: appears more than once")


@pytest.mark.parametrize(
    ("raw", "field", "char"),
    [
        (b'{"end_user": "eve\\u0000"}', "end_user", "U+0000"),
        (b'{"end_user": "eve\x00"}', "end_user", "U+0000"),  # raw, unescaped
        (b'{"profile": "a\\u001fb"}', "profile", "U+001F"),
        (b'{"profile": "a\\u007f"}', "profile", "U+007F"),
        (b'{"profile": "a\xc2\x85"}', "profile", "U+0085"),  # C1, as UTF-8
        (b'{"profile": "a\\u009f"}', "profile", "U+009F"),
        (b'{"a": [{"b": ["ok", "x\\ny"]}]}', "a.0.b.1", "U+000A"),
        (b'{"pro\\u0000file": "p"}', "pro\\u0000file", "U+0000"),
        (b'{"a": {"b\\u0007": 1}}', "a.b\\u0007", "U+0007"),
        (b'{"end_user": "\\ud800"}', "end_user", "lone surrogate U+D800"),
        (b'{"end_user": "\\udfff x"}', "end_user", "lone surrogate U+DFFF"),
    ],
    ids=[
        "nul-escaped",
        "nul-raw",
        "unit-separator",
        "del",
        "c1-raw",
        "c1-escaped",
        "nested",
        "in-a-key",
        "in-a-nested-key",
        "lone-high-surrogate",
        "lone-low-surrogate",
    ],
)
def test_control_characters_and_lone_surrogates_are_refused_by_their_path(raw, field, char):
    found_field, message = refusal(raw)

    assert found_field == field
    assert char in message
    assert "\x00" not in message  # the refusal itself is storable


def test_a_surrogate_pair_is_one_character_and_welcome():
    assert json_object(b'{"end_user": "\\ud83d\\ude00"}') == {"end_user": "\U0001f600"}


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        (b'{"uses": NaN}', "uses", "NaN is not a JSON number"),
        (b'{"uses": Infinity}', "uses", "Infinity is not a JSON number"),
        (b'{"a": [1, -Infinity]}', "a.1", "-Infinity is not a JSON number"),
        (b'{"uses": 1e999}', "uses", "too large"),
    ],
)
def test_numbers_json_does_not_have_are_refused(raw, field, words):
    found_field, message = refusal(raw)

    assert found_field == field
    assert words in message


@pytest.mark.parametrize("opener", [b"[", b'{"a":'])
def test_nesting_5000_deep_is_a_refusal_not_a_recursion_error(opener):
    closer = b"]" if opener == b"[" else b"}"
    raw = b'{"a":' + opener * 5000 + b"1" + closer * 5000 + b"}"

    assert refusal(raw) == ("body", f"body: nests deeper than {MAX_DEPTH} levels")


def test_nesting_up_to_the_limit_is_read_and_brackets_in_strings_do_not_count():
    deep = b'{"a":' * (MAX_DEPTH - 1) + b'{"s": "[[[[{{{{\\"[[[["}' + b"}" * (MAX_DEPTH - 1)

    parsed = json_object(deep)

    for _ in range(MAX_DEPTH - 1):
        parsed = parsed["a"]
    assert parsed == {"s": '[[[[{{{{"[[[['}
    too_deep = b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1)
    assert refusal(too_deep)[0] == "body"


def test_a_long_key_is_cut_short_in_the_field_path():
    field, _ = refusal(b'{"' + b"k" * 500 + b'": 1, "' + b"k" * 500 + b'": 2}')

    assert field == "k" * 64 + "…"
