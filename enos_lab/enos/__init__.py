"""The EnOS device protocol, sans-IO: signatures, login fields, topics, envelopes and codes.

Shared by the hub (server side) and the device SDK (client side). The wire reference is
``enos-protocol.md``; section numbers cited in docstrings refer to it.
"""

from ._codes import ReplyCode
from ._envelope import (
    MAX_JSON_DEPTH,
    MAX_PAYLOAD_SIZE,
    EnvelopeError,
    Reply,
    Request,
    decode_payload,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
)
from ._login import (
    INTEGRATION_DEVICE_KEY,
    BadLogin,
    LoginRequest,
    SecureMode,
    login_credentials,
    parse_login,
    sub_device_proof,
)
from ._signing import SignMethod, sign, sign_content, sign_params, verify_sign
from ._topics import (
    REPLY_SUFFIX,
    Direction,
    TopicKind,
    TopicMatch,
    command_reply_topic,
    filter_matches_request,
    parse_topic,
    reply_topic,
)

__all__ = [
    "INTEGRATION_DEVICE_KEY",
    "MAX_JSON_DEPTH",
    "MAX_PAYLOAD_SIZE",
    "REPLY_SUFFIX",
    "BadLogin",
    "Direction",
    "EnvelopeError",
    "LoginRequest",
    "Reply",
    "ReplyCode",
    "Request",
    "SecureMode",
    "SignMethod",
    "TopicKind",
    "TopicMatch",
    "command_reply_topic",
    "decode_payload",
    "decode_reply",
    "decode_request",
    "encode_reply",
    "encode_request",
    "filter_matches_request",
    "login_credentials",
    "parse_login",
    "parse_topic",
    "reply_topic",
    "sign",
    "sign_content",
    "sign_params",
    "sub_device_proof",
    "verify_sign",
]
