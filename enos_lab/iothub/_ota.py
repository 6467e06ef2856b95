"""OTA (protocol reference 10): firmware versions reported by devices, upgrade progress, and
the firmware offered to them, through a replaceable :class:`~enos_lab.iothub.OtaHandler`.

:class:`MemoryOta`, the default handler, only remembers reported versions; an upgrade campaign
service replaces it (``IotHub.ota``). ``ota/device/request`` is answered 200 with nothing kept.
The tap hears of every version reported and of the progress reports the handler accepts (200):
``OtaReported``.
"""

from __future__ import annotations

from ..enos import ReplyCode, Request, TopicMatch
from ._config import OtaHandler
from ._emit import Emitter
from ._routes import OK, Result
from ._sessions import Conn, Keys

__all__ = ["MemoryOta", "Ota"]


class MemoryOta:
    """The default OTA handler: remembers reported versions; there are no upgrade tasks.

    ``progress`` answers 764 (no task) and ``get_versions`` an empty list. Replace it through
    :attr:`IotHub.ota` to run upgrade campaigns.
    """

    def __init__(self) -> None:
        self.versions: dict[Keys, str] = {}
        """Firmware version last reported per ``(product_key, device_key)``."""

    def inform(self, product_key: str, device_key: str, version: str) -> None:
        """Remember the reported version."""
        self.versions[(product_key, device_key)] = version

    def progress(self, product_key: str, device_key: str, step: str, desc: str) -> int:
        """No upgrade task exists: 764."""
        return int(ReplyCode.OTA_TASK_NOT_FOUND)

    def get_versions(self, product_key: str, device_key: str) -> list[dict[str, object]]:
        """No firmware is offered."""
        return []


class Ota:
    """The OTA request handlers; ``handler`` is the replaceable OTA handler."""

    __slots__ = ("_emit", "handler")

    def __init__(self, emit: Emitter) -> None:
        self.handler: OtaHandler = MemoryOta()
        self._emit = emit

    def firmware_version(self, product_key: str, device_key: str) -> str | None:
        """The firmware version the device last reported (default OTA handler only)."""
        handler = self.handler
        if isinstance(handler, MemoryOta):
            return handler.versions.get((product_key, device_key))
        return None

    async def inform(self, conn: Conn, match: TopicMatch, request: Request) -> Result:
        """``ota.device.inform``: the device's firmware version."""
        params = request.params
        version = params.get("version") if isinstance(params, dict) else None
        if not isinstance(version, str):
            return (ReplyCode.PARSE_ERROR, None, "params.version must be a string")
        keys = (match.product_key, match.device_key)
        self.handler.inform(*keys, version)
        self._emit.ota(keys, "inform", version=version)
        return OK

    async def progress(self, conn: Conn, match: TopicMatch, request: Request) -> Result:
        """``ota.device.progress``: the handler's code (764 without an upgrade task)."""
        params = request.params if isinstance(request.params, dict) else {}
        keys = (match.product_key, match.device_key)
        step, desc = str(params.get("step", "")), str(params.get("desc", ""))
        code = self.handler.progress(*keys, step, desc)
        if code == ReplyCode.SUCCESS:
            self._emit.ota(keys, "progress", step=step, desc=desc)
        return (code, None, None)

    async def get_version(self, conn: Conn, match: TopicMatch, request: Request) -> Result:
        """``ota.device.getversion``: the firmware offered to the device."""
        return (
            ReplyCode.SUCCESS,
            self.handler.get_versions(match.product_key, match.device_key),
            None,
        )
