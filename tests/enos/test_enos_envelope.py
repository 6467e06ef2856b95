"""EnOS envelopes and reply codes (protocol reference sections 4 and 5)."""

from __future__ import annotations

import json

import pytest

from enos_lab.enos import (
    MAX_PAYLOAD_SIZE,
    EnvelopeError,
    ReplyCode,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
)


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
