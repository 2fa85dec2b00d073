"""The WebSocket protocol: parsing client frames, encoding server frames."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from indexer.model import Completion
from server import protocol
from server.protocol import ProtocolError, Query, Submit, parse


def parse_default(text: str) -> protocol.ClientMessage:
    return parse(text, max_prefix=200)


def test_a_query_and_a_submit_are_parsed() -> None:
    assert parse_default('{"type": "query", "id": 3, "prefix": "New Y"}') == Query(3, "New Y")
    assert parse_default('{"type": "query", "id": 3, "prefix": "a", "context": true}') == Query(3, "a", True)
    assert parse_default('{"type": "submit", "query": "weather"}') == Submit("weather")


@pytest.mark.parametrize(
    ("text", "code", "qid", "frame_type"),
    [
        ("", "bad_json", None, None),
        ("[" * 5000, "bad_json", None, None),
        ("null", "bad_message", None, None),
        ('{"id": 1}', "bad_message", 1, None),
        ('{"type": 5, "id": 2}', "bad_message", 2, None),
        ('{"type": "hello", "id": 2}', "unknown_type", 2, None),
        ('{"type": "query", "id": true, "prefix": "a"}', "bad_message", None, "query"),
        ('{"type": "query", "id": 1.5, "prefix": "a"}', "bad_message", None, "query"),
        ('{"type": "query", "id": 1, "prefix": null}', "bad_message", 1, "query"),
        ('{"type": "submit"}', "bad_message", None, "submit"),
        ('{"type": "query", "id": 9, "prefix": "' + "a" * 201 + '"}', "too_long", 9, "query"),
        ('{"type": "submit", "query": "' + "a" * 300 + '"}', "too_long", None, "submit"),
        ('{"type": "query", "id": -1, "prefix": "a"}', "bad_message", None, "query"),
        ('{"type": "query", "id": 9007199254740992, "prefix": "a"}', "bad_message", None, "query"),
        ('{"type": "query", "id": 1e3, "prefix": "a"}', "bad_message", None, "query"),
        ('{"type": "query", "id": 4, "prefix": "a\\u0000b"}', "bad_message", 4, "query"),
        ('{"type": "query", "id": 4, "prefix": "a\\nb"}', "bad_message", 4, "query"),
        ('{"type": "query", "id": 4, "prefix": "a", "context": 1}', "bad_message", 4, "query"),
        ('{"type": "submit", "query": "a\\u009bb"}', "bad_message", None, "submit"),
        ('{"type": "user", "token": 5}', "bad_message", None, "user"),
        ('{"type": "remove"}', "bad_message", None, "remove"),
        ('{"type": "resume", "session": "' + "s" * 257 + '"}', "too_long", None, "resume"),
    ],
)
def test_a_bad_frame_names_its_error_code_query_id_and_type(
    text: str, code: str, qid: int | None, frame_type: str | None
) -> None:
    with pytest.raises(ProtocolError) as error:
        parse_default(text)
    assert (error.value.code, error.value.id, error.value.frame_type) == (code, qid, frame_type)


@given(st.text(max_size=300))
def test_any_text_parses_or_raises_a_protocol_error(text: str) -> None:
    try:
        parse_default(text)
    except ProtocolError as error:
        assert error.code in {"bad_json", "bad_message", "unknown_type", "too_long"}


@given(st.dictionaries(st.sampled_from(["type", "id", "prefix", "query"]),
                       st.none() | st.booleans() | st.integers() | st.text(max_size=5) | st.just("query")))
def test_any_json_object_parses_or_raises_a_protocol_error(obj: dict[str, object]) -> None:
    try:
        message = parse_default(json.dumps(obj))
    except ProtocolError:
        return
    assert isinstance(message, Query | Submit)


def test_server_frames_are_compact_json() -> None:
    frame = protocol.suggestions(4, "new y", [Completion("new york", 1.23456789)], 0.12345, True)
    assert json.loads(frame) == {
        "type": "suggestions", "id": 4, "prefix": "new y",
        "items": [{"query": "new york", "score": 1.234568}], "took_ms": 5, "context": True,
    }
    assert json.loads(protocol.error("too_long", "x")) == {
        "type": "error", "id": None, "code": "too_long", "message": "x"
    }
    assert json.loads(protocol.error("too_long", "x", None, "submit")) == {
        "type": "error", "id": None, "code": "too_long", "message": "x", "for": "submit"
    }
    hello = {"type": "hello", "session": "s", "index": "v", "history": 2, "queries": ["weather", "news"],
             "limits": {"max_prefix": 200, "rate": 50.0, "burst": 100}}
    assert json.loads(protocol.hello("s", "v", ["weather", "news"], max_prefix=200, rate=50, burst=100)) == hello
    assert json.loads(protocol.ack(["a", "b", "c"], True)) == {"type": "ack", "history": 3, "queries": ["a", "b", "c"],
                                                               "added": True}
    assert json.loads(protocol.ack([], False, stored=False)) == {"type": "ack", "history": 0, "queries": [],
                                                                 "added": False, "stored": False}


def test_peek_id_never_raises() -> None:
    assert protocol.peek_id('{"id": 7}') == 7
    assert protocol.peek_id('{"id": "7"}') is None
    assert protocol.peek_id("[" * 3000) is None
    assert protocol.peek_id("[1]") is None


def test_peek_type_names_client_frame_types_only_and_never_raises() -> None:
    assert protocol.peek_type('{"type": "submit", "query": 5}') == "submit"
    assert protocol.peek_type({"type": "resume"}) == "resume"
    assert protocol.peek_type('{"type": "hello"}') is None
    assert protocol.peek_type('{"type": ["query"]}') is None
    assert protocol.peek_type("[" * 3000) is None
    assert protocol.peek_type('"query"') is None


def test_frame_size_counts_utf8_bytes() -> None:
    assert protocol.frame_size("abc") == 3
    assert protocol.frame_size("é") == 2
    assert protocol.frame_size("\ud800") == 3  # a lone surrogate still has a size


def test_items_say_personal_and_corrected_only_when_true() -> None:
    from indexer.model import Completion
    from server.protocol import items

    got = items([Completion("new york", 1.0), Completion("news", 0.5, personal=True),
                 Completion("weather", 0.25, corrected=True)])
    assert got == [{"query": "new york", "score": 1.0}, {"query": "news", "score": 0.5, "personal": True},
                   {"query": "weather", "score": 0.25, "corrected": True}]


def test_took_ms_is_rounded_up_to_5_ms_so_that_fast_and_slow_answers_look_alike() -> None:
    took = [json.loads(protocol.suggestions(1, "a", [], ms))["took_ms"] for ms in (0.08, 1.3, 4.99, 5.0, 5.01, 12)]
    assert took == [5, 5, 5, 5, 10, 15]
