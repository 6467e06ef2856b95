"""Downstream commands: the handlers a device registers, and the code each command is answered
with (protocol reference 4.3, 5.2, 9).

Commands reach a device without any subscription. Each kind has one handler slot per device
(services one per service id); the reply's code follows the official SDKs: 200 with the
handler's result as ``data``; 1101 when no handler is registered; the code of a
:class:`~enos_lab.errors.CommandError` the handler raised (user codes are 2000 or above; a
lower one is sent but logged, as the SDKs warn); 500 when the handler raised anything else
(the Python SDK's code; the exception is logged with its traceback).
"""

from __future__ import annotations

import logging
from typing import Any

from ..enos import ReplyCode, TopicKind
from ..errors import CommandError
from ._types import Handler

__all__ = [
    "HANDLER_NOT_FOUND",
    "NOTIFICATIONS",
    "Handlers",
    "failure",
]

log = logging.getLogger("enos_lab.device")

NOTIFICATIONS = frozenset(
    {
        TopicKind.SUB_DEVICE_ENABLE,
        TopicKind.SUB_DEVICE_DISABLE,
        TopicKind.SUB_DEVICE_DELETE,
        TopicKind.THING_ENABLE,
        TopicKind.THING_DISABLE,
        TopicKind.THING_DELETE,
    }
)
"""Lifecycle notifications, all handled by ``on_notification``."""

USER_CODES = 2000
"""Smallest user-defined reply code (protocol reference 5.2)."""

HANDLER_NOT_FOUND = (
    int(ReplyCode.HANDLER_NOT_FOUND),
    None,
    "downstream command handler not registered",
)
"""The reply to a command nobody handles (the official SDKs' code and text)."""


class Handlers:
    """The command handlers of one device (a client's own, or a sub-device's)."""

    __slots__ = (
        "attribute_set",
        "measurepoint_get",
        "measurepoint_set",
        "notification",
        "ota_upgrade",
        "raw_down",
        "services",
    )

    def __init__(self) -> None:
        self.services: dict[str, Handler] = {}
        self.measurepoint_set: Handler | None = None
        self.measurepoint_get: Handler | None = None
        self.ota_upgrade: Handler | None = None
        self.raw_down: Handler | None = None
        self.notification: Handler | None = None
        self.attribute_set: Handler | None = None

    def lookup(self, kind: TopicKind, item_id: str, method: str | None) -> Handler | None:
        """The handler of a command of ``kind`` (``item_id`` from its topic, ``method`` from
        its envelope); ``None`` when there is none."""
        if kind is TopicKind.SERVICE_INVOKE:
            return self.services.get(item_id)
        if kind is TopicKind.RRPC_REQUEST:
            # legacy RRPC (9.4): the service is named by the method, thing.service.{id}
            if method is None or not method.startswith("thing.service."):
                return None
            return self.services.get(method.removeprefix("thing.service."))
        if kind is TopicKind.MEASUREPOINT_SET:
            return self.measurepoint_set
        if kind is TopicKind.MEASUREPOINT_GET:
            return self.measurepoint_get
        if kind is TopicKind.OTA_UPGRADE:
            return self.ota_upgrade
        if kind is TopicKind.MODEL_DOWN_RAW:
            return self.raw_down
        if kind is TopicKind.ATTRIBUTE_SET:
            return self.attribute_set
        if kind in NOTIFICATIONS:
            return self.notification
        return None


def failure(exc: Exception, what: str) -> tuple[int, Any, str]:
    """The reply ``(code, data, message)`` to a command whose handler raised ``exc``;
    ``what`` names the command in the log."""
    if isinstance(exc, CommandError):
        if exc.code < USER_CODES and exc.code != ReplyCode.SUCCESS:
            log.warning(
                "%s: handler replied code %d; user-defined codes are %d or above",
                what,
                exc.code,
                USER_CODES,
            )
        return (exc.code, None, exc.message)
    log.error("%s: command handler raised", what, exc_info=exc)
    return (
        int(ReplyCode.DEVICE_HANDLER_ERROR),
        None,
        f"command handler execution failed: {exc}",
    )
