"""EnOS reply codes (the ``code`` of a reply envelope) and their standard messages.

Codes are integers on the wire (``"code": 200``, never the string ``"200"``): the Python SDK's
``is_success()`` is ``code == 200``. Sources: section 5 of the protocol reference
(EnOS "common parameters", measurepoint, topology and sub-device connection docs).
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["ReplyCode"]


class ReplyCode(IntEnum):
    """Codes a hub sends in replies to device requests (and a few a device sends back)."""

    SUCCESS = 200
    # device-side codes (sent by SDKs in replies to commands)
    DEVICE_HANDLER_ERROR = 500  # Python SDK: the device's handler raised
    HANDLER_NOT_FOUND = 1101  # SDKs: no handler registered for the command
    # transport / envelope
    MESSAGE_TOO_LARGE = 1008
    NO_WRITE_PERMISSION = 1009
    PARSE_ERROR = 1200
    MODEL_VALIDATION_FAILED = 1204
    MEASUREPOINT_FORMAT_ERROR = 1206
    ATTRIBUTE_UPDATE_FORMAT_ERROR = 1207
    ATTRIBUTE_QUERY_FORMAT_ERROR = 1208
    ATTRIBUTE_DELETE_FORMAT_ERROR = 1209
    NO_SUB_DEVICE_PERMISSION = 1212
    INVALID_JSON = 1220
    EMPTY_PAYLOAD = 1251
    TOPO_ADD_FAILED = 1255
    TOPO_DELETE_FAILED = 1256
    DEVICE_NOT_FOUND = 1257
    METHOD_NOT_CONSISTENT = 1260
    # device registration
    DEVICE_KEY_EXISTS = 702
    DEVICE_KEY_GENERATION_FAILED = 714
    DEVICE_QUOTA_EXCEEDED = 739
    # sub-device connection
    SUB_DEVICE_NOT_FOUND = 705
    SUB_DEVICE_DISABLED = 723
    SUB_DEVICE_NOT_UNDER_GATEWAY = 740
    SUB_DEVICE_SIGN_CHECK_FAILED = 742
    SUB_DEVICE_MUST_USE_SSL = 746
    DYNAMIC_ACTIVATION_NOT_ALLOWED = 770
    SUB_DEVICE_CANNOT_CONNECT_DIRECTLY = 771
    # OTA
    OTA_TASK_NOT_FOUND = 764
    OTA_TASK_NOT_STARTED = 765

    @property
    def message(self) -> str:
        """The standard human-readable message for this code."""
        return _MESSAGES.get(self, self.name.replace("_", " ").lower())


_MESSAGES: dict[ReplyCode, str] = {
    ReplyCode.SUCCESS: "",
    ReplyCode.MESSAGE_TOO_LARGE: "Message too large, discarded",
    ReplyCode.NO_WRITE_PERMISSION: "Publish to topic with no write permission",
    ReplyCode.PARSE_ERROR: "Parse error",
    ReplyCode.MODEL_VALIDATION_FAILED: "Model validation failed",
    ReplyCode.MEASUREPOINT_FORMAT_ERROR: "Measurepoint post data format error",
    ReplyCode.ATTRIBUTE_UPDATE_FORMAT_ERROR: "Attribute update data format error",
    ReplyCode.ATTRIBUTE_QUERY_FORMAT_ERROR: "Attribute query data format error",
    ReplyCode.ATTRIBUTE_DELETE_FORMAT_ERROR: "Attribute delete data format error",
    ReplyCode.NO_SUB_DEVICE_PERMISSION: "No permission for this sub-device",
    ReplyCode.INVALID_JSON: "Payload is not valid JSON",
    ReplyCode.EMPTY_PAYLOAD: "Payload is empty",
    ReplyCode.TOPO_ADD_FAILED: "Add topo failure",
    ReplyCode.TOPO_DELETE_FAILED: "Remove topo failure",
    ReplyCode.DEVICE_NOT_FOUND: "Device not found",
    ReplyCode.METHOD_NOT_CONSISTENT: "Methods not consistent",
    ReplyCode.DEVICE_KEY_EXISTS: "Device key already exists",
    ReplyCode.DEVICE_KEY_GENERATION_FAILED: "Device key generation failed",
    ReplyCode.DEVICE_QUOTA_EXCEEDED: "Product device quota exceeded",
    ReplyCode.SUB_DEVICE_NOT_FOUND: "Sub-device does not exist",
    ReplyCode.SUB_DEVICE_DISABLED: "Device is disable",
    ReplyCode.SUB_DEVICE_NOT_UNDER_GATEWAY: "Sub-device is not under this gateway",
    ReplyCode.SUB_DEVICE_SIGN_CHECK_FAILED: "Sign check failed",
    ReplyCode.SUB_DEVICE_MUST_USE_SSL: "The device must login by ssl",
    ReplyCode.DYNAMIC_ACTIVATION_NOT_ALLOWED: "Dynamic activate is not allowed",
    ReplyCode.SUB_DEVICE_CANNOT_CONNECT_DIRECTLY: (
        "Sub device cannot connect to mqtt broker directly"
    ),
    ReplyCode.OTA_TASK_NOT_FOUND: "Device task not found",
    ReplyCode.OTA_TASK_NOT_STARTED: "Device task not started",
}
