"""EnOS envelopes and reply codes (protocol reference sections 4 and 5)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enos_lab import errors
from enos_lab.enos import (
    MAX_JSON_DEPTH,
    MAX_PAYLOAD_SIZE,
    EnvelopeError,
    ReplyCode,
    decode_payload,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
)


def test_envelope_errors_are_protocol_errors_of_the_one_tree() -> None:
    with pytest.raises(errors.ProtocolError) as info:
        decode_request(b"")
    assert isinstance(info.value, EnvelopeError) and EnvelopeError is errors.EnvelopeError
    assert info.value.code == ReplyCode.EMPTY_PAYLOAD


def test_request_round_trip_keeps_id_and_flags() -> None:
    payload = encode_request(
        "18",
        "thing.measurepoint.post.batch",
        [{"productKey": "", "deviceKey": "", "measurepoints": {"t": 1}}],
        allowOfflineSubDevice="",
        skipInvalidMeasurepoints=True,
    )
    request = decode_request(payload)
    assert request.id == "18"
    assert request.method == "thing.measurepoint.post.batch"
    assert request.version == "1.0"
    assert request.params[0]["measurepoints"] == {"t": 1}
    assert request.flag("allowOfflineSubDevice") is False  # Python SDK sends "" when unset
    assert request.flag("skipInvalidMeasurepoints") is True
    assert request.flag("absent") is False


def test_reply_echoes_id_with_integer_code_and_always_data_and_message() -> None:
    document = json.loads(encode_reply("17", ReplyCode.SUCCESS))
    assert document == {"id": "17", "code": 200, "data": {}, "message": ""}
    assert type(document["code"]) is int
    numeric = json.loads(encode_reply(17, ReplyCode.NO_WRITE_PERMISSION))
    assert numeric["id"] == 17
    assert numeric["message"] == "Publish to topic with no write permission"
    custom = json.loads(encode_reply(None, 2001, data=[1], message="device says no"))
    assert custom == {"id": None, "code": 2001, "data": [1], "message": "device says no"}


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"", ReplyCode.EMPTY_PAYLOAD),
        (b"{not json", ReplyCode.INVALID_JSON),
        (b"\xff\xfe", ReplyCode.INVALID_JSON),
        (b"[1, 2]", ReplyCode.INVALID_JSON),
        (b'"text"', ReplyCode.INVALID_JSON),
        (b'{"id":"1","params":"' + b"x" * MAX_PAYLOAD_SIZE + b'"}', ReplyCode.MESSAGE_TOO_LARGE),
    ],
)
def test_bad_payloads_carry_the_enos_code(payload: bytes, code: ReplyCode) -> None:
    with pytest.raises(EnvelopeError) as info:
        decode_request(payload)
    assert info.value.code is code


def test_decode_reply_from_devices() -> None:
    python_sdk = decode_reply(b'{"id":"act-1","code":200,"data":null,"message":"ok"}')
    assert python_sdk.ok and python_sdk.id == "act-1" and python_sdk.data is None
    node_sdk = decode_reply(b'{"id":"5","code":200,"data":{}}')
    assert node_sdk.ok and node_sdk.message == ""
    failure = decode_reply(b'{"id":"6","code":"1101","data":""}')
    assert failure.code == ReplyCode.HANDLER_NOT_FOUND and not failure.ok
    with pytest.raises(EnvelopeError) as info:
        decode_reply(b'{"id":"7"}')
    assert info.value.code is ReplyCode.PARSE_ERROR


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"1" + b"]" * depth


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b'{"id":"1","params":{"x":NaN}}', "NaN is not a JSON number"),
        (b'{"id":"1","params":{"x":Infinity}}', "Infinity is not a JSON number"),
        (b'{"id":"1","params":{"x":-Infinity}}', "Infinity is not a JSON number"),
        (b'{"id":"1","params":{"x":1e400}}', "infinity"),
        (b'{"id":"1","params":{"x":-1e400}}', "infinity"),
        (b'{"id":"1","params":{"x":1' + b"0" * 400 + b"}}", "infinity"),
        (b'{"id":"\\ud800","params":{}}', "surrogate"),
        (b'{"id":"1","params":{"\\udfff":1}}', "surrogate"),
        (b'{"id":"1","params":{"x":"\xed\xa0\x80"}}', "not valid UTF-8"),  # encoded surrogate
        (b'{"id":"1","params":{"x":"\xff"}}', "not valid UTF-8"),
        (b'\xef\xbb\xbf{"id":"1"}', "BOM"),
        (b'{"id":"1"} {"id":"2"}', "after document"),
        (b'{"id":"1","params":' + _nested(10_000) + b"}", "deeper than 16 levels"),
        (b'{"id":"1","params":' + _nested(16) + b"}", "deeper than 16 levels"),
    ],
)
def test_payloads_that_are_not_strict_json_are_1220(payload: bytes, problem: str) -> None:
    for decode in (decode_request, decode_reply):
        with pytest.raises(EnvelopeError) as info:
            decode(payload)
        assert info.value.code is ReplyCode.INVALID_JSON
        assert problem in str(info.value)


def test_nesting_up_to_the_bound_is_accepted() -> None:
    assert MAX_JSON_DEPTH == 16
    deepest = b'{"id":"1","params":' + _nested(MAX_JSON_DEPTH - 1) + b"}"
    assert decode_request(deepest).params == json.loads(_nested(MAX_JSON_DEPTH - 1))
    # many brackets side by side are not deep
    wide = b'{"id":"1","params":[' + b",".join([b'{"a":[1]}'] * 100) + b"]}"
    assert len(decode_request(wide).params) == 100


def test_numbers_decode_as_the_store_keeps_them() -> None:
    params = decode_request(
        b'{"id":1,"params":[9223372036854775808,18446744073709551616,1e308,1e-400,-0]}'
    ).params
    assert params == [2**63, float(2**64), 1e308, 0.0, 0]
    assert type(params[1]) is float


def test_decode_payload_takes_text_like_bytes() -> None:
    assert (
        decode_payload('{"a":[1,"é"]}')
        == decode_payload('{"a":[1,"é"]}'.encode())
        == {"a": [1, "é"]}
    )
    with pytest.raises(EnvelopeError):
        decode_payload('{"a":"\ud800"}')
    with pytest.raises(EnvelopeError) as info:
        decode_payload(_nested(MAX_JSON_DEPTH + 1).decode(), "decoded")
    assert str(info.value).startswith("decoded payload nests")


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=200)
    | st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass"))
)
def test_decode_payload_raises_only_envelope_errors(payload: bytes) -> None:
    try:
        decode_payload(payload)
    except EnvelopeError as exc:
        assert exc.code is ReplyCode.INVALID_JSON
