"""The firmware HTTP server: devices download registered firmware files from it, as they
would from the EnOS file service (protocol reference 10: ``fileUrl``).

An aiohttp server on the lab's loop, bound to the lab's host (127.0.0.1 by default) on a free
port unless told otherwise; bound to all interfaces, the URLs it gives name loopback
(127.0.0.1, or ::1 for ``::``). It serves ``GET`` and ``HEAD`` (with ``Range``) of
``/ota/firmware/{token}/{file name}`` for registered firmware only, looked up by the
unguessable token each firmware gets when registered; anything else is 404, any other method
405. It serves files, never lists them, and follows no path the request names. aiohttp is
imported when the server first starts, so that a lab that serves no firmware does not load it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ._records import Firmware

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["FirmwareServer"]

log = logging.getLogger(__name__)

Lookup = Callable[[str], tuple[Firmware, Path] | None]
"""Finds a firmware and its file by URL token (None: no such firmware)."""


class FirmwareServer:
    """The firmware HTTP server (see the module docstring). :meth:`start` and :meth:`stop` on
    the lab's loop; :attr:`base_url` once started."""

    def __init__(self, lookup: Lookup) -> None:
        self._lookup = lookup
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        """``http://host:port`` of the running server ("" when stopped)."""
        self.downloads = 0
        """How many firmware files were served (GET). [-]"""

    @property
    def running(self) -> bool:
        """Whether the server listens."""
        return self._runner is not None

    async def start(self, host: str, port: int = 0) -> None:
        """Listen on ``host``:``port`` (0: a free port)."""
        from aiohttp import web  # noqa: PLC0415 - loaded only when firmware is served

        app = web.Application()
        app.router.add_get("/ota/firmware/{token}/{name}", self._serve)  # and HEAD
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        if host in ("", "0.0.0.0"):  # all interfaces: loopback is one of them
            bound_host = "127.0.0.1"
        elif host == "::":
            bound_host = "::1"
        shown = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
        self.base_url = f"http://{shown}:{bound_port}"

    async def stop(self) -> None:
        """Close the listener and the open connections (idempotent)."""
        runner, self._runner = self._runner, None
        self.base_url = ""
        if runner is not None:
            await runner.cleanup()

    def url(self, firmware: Firmware) -> str:
        """The URL of ``firmware`` on this server."""
        return self.base_url + firmware.path()

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web  # noqa: PLC0415 - imported by start() already

        found = self._lookup(request.match_info["token"])
        if found is None or found[0].file_name != request.match_info["name"]:
            raise web.HTTPNotFound()
        firmware, path = found
        if not path.is_file():
            log.warning(
                "firmware %s %s: its file %s is missing",
                firmware.product_key,
                firmware.version,
                path,
            )
            raise web.HTTPNotFound()
        if request.method == "GET":
            self.downloads += 1
        return web.FileResponse(
            path,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Disposition": f'attachment; filename="{firmware.file_name}"',
                "Cache-Control": "no-store",
            },
        )
