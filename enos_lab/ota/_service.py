"""The OTA service: firmware upgrade campaigns over the OTA topics (protocol reference 10).

Theory of operation
-------------------
:class:`OtaService` is the IoT hub's OTA handler (it replaces :class:`~enos_lab.iothub.
MemoryOta`, whose ``versions`` it keeps, now also in ``ota.sqlite3``, so the device views and
campaign targeting know every version reported, across restarts). It runs on the lab's loop.

Each device of a campaign has an upgrade (:class:`~enos_lab.ota.Upgrade`) that moves through
:class:`~enos_lab.ota.UpgradeState`:

- ``pending``: not pushed yet (its wave not released, the rollout rate, or the device offline);
- ``pushed``: ``ota.device.upgrade`` sent (version, signMethod, sign, fileUrl of the lab's
  firmware server, fileSize as a JSON integer); a device that goes offline before reporting
  any progress goes back to ``pending`` and gets the push again when it is back;
- ``upgrading``: progress steps "0".."99";
- ``rebooting``: step "100"; the device must now reconnect and report its version;
- ``succeeded``: it reported the target version in ``ota.device.inform`` after going offline
  (truth over reporting: 100 % alone is not success);
- ``failed``: a negative step ("-1" undefined, "-2" download failed, "-3" verification failed,
  "-4" write failed, "-5" device ignored), no end within the campaign's ``timeout`` after the
  push (on the lab's clock: one :class:`~enos_lab.clock.DeadlineTimer` armed at the earliest
  deadline), a push the device answered with an error code, or back after 100 % with another
  version (power loss: "reported 100% but came back with 1.0.0"). A campaign with
  ``retries`` puts a failed device back to ``pending`` that many times first.
- ``aborted`` (never pushed: the campaign was aborted) and ``skipped`` (not targeted: no
  version reported, already at the target version, or in another campaign's upgrade).

Progress from a device without an upgrade is answered 764, from one whose upgrade was not
pushed yet 765, a step that is not an integer string from "-5" to "100" 1200. A device has at
most one upgrade in progress; ``get_versions`` (``ota/device/getversion``) answers the firmware
of that upgrade.

Campaigns push in waves (``wave_size`` devices each): the next wave is released once no device
of the earlier ones is in flight (pending devices that are offline do not hold it; they get the
push when they come online: :class:`~enos_lab.tap.PresenceChanged` on the tap, and again after
their ``inform``; the service listens to the tap only while some upgrade is not over), at
most ``rate`` pushes per minute. A campaign aborts (pending devices
``aborted``, devices in flight go on) when its share of failed devices among those finished
reaches ``abort_failure_rate`` with at least ``abort_min_sample`` finished. With ``rollback``,
a device that failed after writing (step "-4", or power loss after 100 %) is put into a rollback
campaign to its previous version when that firmware is registered (one rollback campaign per
campaign and previous version); otherwise its error says there was none.

The tap hears of every state change (:class:`~enos_lab.tap.OtaStateChanged`), besides the
devices' own reports (``OtaReported``). Every change is written to ``ota.sqlite3`` at once; at
a start, the upgrades not over and the running campaigns are taken up again (deadlines
included).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path

from ..clock import Clock, DeadlineTimer, from_epoch_ms
from ..enos import ReplyCode, TopicKind
from ..errors import ClosedError, DeviceOffline, NotFound
from ..iothub import IotHub, MemoryOta
from ..registry import Registry
from ..tap import OtaStateChanged, PresenceChanged, Tap, TapCallback
from ._campaigns import (
    DEFAULT_ABORT_MIN_SAMPLE,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    CampaignOps,
)
from ._firmware import MAX_VERSION_LENGTH, FirmwareRegistry
from ._records import (
    OTA_FILE,
    Campaign,
    CampaignState,
    Firmware,
    OtaRecords,
    Upgrade,
    UpgradeState,
)
from ._server import FirmwareServer

__all__ = [
    "DEFAULT_ABORT_MIN_SAMPLE",
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT",
    "FAILURE_STEPS",
    "OtaService",
]

log = logging.getLogger(__name__)


FAILURE_STEPS: Mapping[str, str] = {
    "-1": "undefined",
    "-2": "download failed",
    "-3": "verification failed",
    "-4": "write failed",
    "-5": "device ignored",
}
"""The negative progress steps and their names (protocol reference 10)."""

_WRITE_FAILED = "-4"
_POWER_LOSS = "power loss"
_DELETED = "the device was deleted"
_Keys = tuple[str, str]


class OtaService(CampaignOps, MemoryOta):
    """Firmware, its HTTP server and the upgrade campaigns of a running lab (see the module
    docstring). Build it with :meth:`start`; use it on the lab's loop (``records`` and
    ``firmware`` from any thread)."""

    def __init__(  # noqa: PLR0917 - the parts it works with
        self,
        records: OtaRecords,
        firmware: FirmwareRegistry,
        iothub: IotHub,
        registry: Registry,
        clock: Clock,
        tap: Tap,
    ) -> None:
        super().__init__()
        self.records = records
        """The OTA records (``ota.sqlite3``)."""
        self.firmware = firmware
        """The firmware registry."""
        self.server = FirmwareServer(self._lookup)
        """The firmware HTTP server."""
        self._iothub = iothub
        self._registry = registry
        self._clock = clock
        self._tap = tap
        self._active: dict[_Keys, Upgrade] = {}
        self._campaigns: dict[str, Campaign] = {}  # running, and those with devices in flight
        self._next_slot: dict[str, int] = {}  # campaign -> earliest next push (rate) [ms]
        self._waiters: dict[_Keys, list[asyncio.Future[UpgradeState]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer = DeadlineTimer(clock, self._drive)
        self._presence: TapCallback | None = None
        self._closed = False
        self._drive_pending = False  # a _drive_now is scheduled
        self._listen: tuple[str, int] = ("127.0.0.1", 0)  # where the firmware server listens
        self._tokens: dict[str, tuple[Firmware, Path]] = {}

    @classmethod
    async def start(  # noqa: PLR0917 - the parts it works with
        cls,
        data_dir: Path,
        iothub: IotHub,
        registry: Registry,
        clock: Clock,
        tap: Tap,
        host: str,
        port: int = 0,
    ) -> OtaService:
        """Open the records in ``data_dir``, take up the campaigns left running and become
        ``iothub``'s OTA handler. The firmware server (on ``host``:``port``) starts once there
        is firmware to serve: now if some is registered, else with the first
        (:meth:`firmware_added`)."""
        records = await asyncio.to_thread(OtaRecords, data_dir / OTA_FILE)

        def product_exists(product_key: str) -> bool:
            try:
                registry.get_product(product_key)
            except NotFound:
                return False
            return True

        firmware = FirmwareRegistry(data_dir, records, clock.time_ms, product_exists)
        service = cls(records, firmware, iothub, registry, clock, tap)
        try:
            await asyncio.to_thread(service._load)
            service._listen = (host, port)
            if service._tokens:
                await service.serve()
        except BaseException:
            await service.server.stop()
            await asyncio.to_thread(records.close)
            raise
        iothub.ota = service
        service._drive()
        return service

    def _load(self) -> None:
        self.versions.update(self.records.versions())
        for firmware in self.records.firmwares():
            self._tokens[firmware.token] = (firmware, self.firmware.file(firmware))
        for campaign in self.records.campaigns(CampaignState.RUNNING):
            self._campaigns[campaign.campaign_id] = campaign
        for upgrade in self.records.upgrades(active=True):
            self._active[upgrade.keys] = upgrade
            if upgrade.campaign_id not in self._campaigns:
                self._campaigns[upgrade.campaign_id] = self.records.campaign(upgrade.campaign_id)

    async def stop(self) -> None:
        """Leave the tap and the IoT hub, stop the server, await the pushes, close the records."""
        self._closed = True
        if self._presence is not None:
            self._presence.cancel()
            self._presence = None
        self._timer.cancel()
        if self._iothub.ota is self:
            memory = MemoryOta()
            memory.versions.update(self.versions)
            self._iothub.ota = memory
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(ClosedError("the lab stopped"))
        self._waiters.clear()
        await self.server.stop()
        tasks = list(self._tasks)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=1.0)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await asyncio.to_thread(self.records.close)

    # -- firmware -----------------------------------------------------------------------------

    def _lookup(self, token: str) -> tuple[Firmware, Path] | None:
        return self._tokens.get(token)

    async def serve(self) -> str:
        """Start the firmware server unless it runs; its base URL (on the loop)."""
        if not self.server.running and not self._closed:
            await self.server.start(*self._listen)
        return self.server.base_url

    async def firmware_added(self, firmware: Firmware) -> None:
        """Serve a firmware just registered (on the loop; starts the server if need be)."""
        self._tokens[firmware.token] = (firmware, self.firmware.file(firmware))
        await self.serve()

    def firmware_removed(self, firmware: Firmware) -> None:
        """Stop serving a firmware just removed (on the loop)."""
        self._tokens.pop(firmware.token, None)

    def firmware_url(self, firmware: Firmware) -> str:
        """The URL devices download ``firmware`` from."""
        return self.server.url(firmware)

    def _offer(self, upgrade: Upgrade) -> dict[str, object] | None:
        """The firmware object of ``upgrade`` as pushed (None: its firmware was removed)."""
        firmware = self.records.firmware(upgrade.product_key, upgrade.to_version)
        if firmware is None:
            return None
        return {
            "version": firmware.version,
            "signMethod": firmware.sign_method,
            "sign": firmware.sign,
            "fileUrl": self.firmware_url(firmware),
            "fileSize": int(firmware.size),  # a JSON integer (Java casts it to int)
        }

    # -- the OTA handler (the IoT hub calls these on the loop) ----------------------------------

    def inform(self, product_key: str, device_key: str, version: str) -> None:
        """A device reported its firmware ``version``: kept; ends an upgrade waiting for it."""
        keys = (product_key, device_key)
        if len(version) > MAX_VERSION_LENGTH or not version.strip():
            log.warning(
                "device %s/%s reported firmware version %r, not a usable version: ignored",
                *keys,
                version[:80],
            )
            return
        now = self._clock.time_ms()
        if self.versions.get(keys) != version:  # a device repeating itself costs no write
            self.versions[keys] = version
            try:
                self.records.set_version(*keys, version, now)
            except ClosedError:
                return
        upgrade = self._active.get(keys)
        if upgrade is not None:
            if upgrade.state is UpgradeState.REBOOTING and upgrade.offline_seen:
                if version == upgrade.to_version:
                    self._succeed(upgrade, now)
                else:
                    self._fail(
                        upgrade,
                        f"reported 100% but came back with {version}",
                        now,
                        cause=_POWER_LOSS,
                    )
            elif upgrade.state is UpgradeState.PENDING:
                if version == upgrade.to_version:
                    self._finish(upgrade, UpgradeState.SUCCEEDED, now, None)
                elif upgrade.pushed_ms is None:
                    upgrade.from_version = version
                    self._save(upgrade, now)
            self._drive_soon()  # only a device with an upgrade changes what is due

    def progress(self, product_key: str, device_key: str, step: str, desc: str) -> int:
        """A device reported upgrade progress: 764 without an upgrade, 765 before its push,
        1200 for a step that is not "-5".."100"; else 200 and the upgrade moves on."""
        upgrade = self._active.get((product_key, device_key))
        if upgrade is None:
            return int(ReplyCode.OTA_TASK_NOT_FOUND)
        if upgrade.state is UpgradeState.PENDING:
            return int(ReplyCode.OTA_TASK_NOT_STARTED)
        try:
            number = int(step)
        except ValueError:
            number = None
        if number is None or not -5 <= number <= 100 or str(number) != step.strip():
            return int(ReplyCode.PARSE_ERROR)
        now = self._clock.time_ms()
        upgrade.step, upgrade.desc = str(number), desc[:256]
        if number < 0:
            name = FAILURE_STEPS[str(number)]
            error = f"step {number}: {name}" + (f" ({desc[:200]})" if desc else "")
            self._fail(upgrade, error, now, cause=str(number))
            self._drive_soon()
        elif upgrade.state is not UpgradeState.REBOOTING:
            upgrade.progress = number
            if number == 100:
                upgrade.state = UpgradeState.REBOOTING
                upgrade.offline_seen = False
            else:
                upgrade.state = UpgradeState.UPGRADING
            self._save(upgrade, now)
        return int(ReplyCode.SUCCESS)

    def get_versions(self, product_key: str, device_key: str) -> list[dict[str, object]]:
        """The firmware of the device's upgrade in progress (none: an empty list)."""
        upgrade = self._active.get((product_key, device_key))
        if upgrade is None:
            return []
        offer = self._offer(upgrade)
        return [] if offer is None else [offer]

    def _on_presence(self, event: PresenceChanged) -> None:
        keys = (event.product_key, event.device_key)
        upgrade = self._active.get(keys)
        if upgrade is None:
            return
        now = self._clock.time_ms()
        if upgrade.state is UpgradeState.REBOOTING and not upgrade.offline_seen:
            # offline, or online again (a new login: a reconnect even if its offline is late)
            upgrade.offline_seen = True
            self._save(upgrade, now)
        elif not event.online and upgrade.state is UpgradeState.PUSHED:
            # never started: pushed again when it is back
            upgrade.state = UpgradeState.PENDING
            upgrade.attempts -= 1
            upgrade.deadline_ms = None
            self._save(upgrade, now)
        if event.online:
            self._drive_soon()

    # -- state changes ----------------------------------------------------------------------------

    def _save(self, upgrade: Upgrade, now: int) -> None:
        """Write the upgrade; tell the tap when its state changed (``OtaStateChanged``)."""
        upgrade.updated_ms = now
        with contextlib.suppress(ClosedError):  # the lab is stopping
            self.records.save_upgrade(upgrade)
        if upgrade.extra.get("told") is upgrade.state:
            return
        upgrade.extra["told"] = upgrade.state
        if self._tap.wants(OtaStateChanged):
            self._tap.emit(
                OtaStateChanged(
                    upgrade.product_key,
                    upgrade.device_key,
                    from_epoch_ms(now),
                    upgrade.campaign_id,
                    upgrade.state.value,
                    upgrade.from_version,
                    upgrade.to_version,
                    upgrade.progress,
                    upgrade.error,
                )
            )

    def _finish(self, upgrade: Upgrade, state: UpgradeState, now: int, error: str | None) -> None:
        upgrade.state = state
        upgrade.error = error
        upgrade.finished_ms = now
        upgrade.deadline_ms = None
        if state is UpgradeState.SUCCEEDED:
            upgrade.progress = 100
        self._save(upgrade, now)
        if self._active.get(upgrade.keys) is upgrade:
            del self._active[upgrade.keys]
        for waiter in self._waiters.pop(upgrade.keys, []):
            if not waiter.done():
                waiter.set_result(state)

    def _succeed(self, upgrade: Upgrade, now: int) -> None:
        self._finish(upgrade, UpgradeState.SUCCEEDED, now, None)

    def _fail(self, upgrade: Upgrade, error: str, now: int, *, cause: str | None = None) -> None:
        """A failed attempt: back to pending while retries remain, else failed (with the
        rollback and the abort threshold of its campaign)."""
        campaign = self._campaigns.get(upgrade.campaign_id)
        retries = 0 if campaign is None else int(campaign.settings.get("retries", 0))
        if (
            campaign is not None
            and campaign.state is CampaignState.RUNNING
            and upgrade.attempts <= retries
        ):
            upgrade.state = UpgradeState.PENDING
            upgrade.error = error
            upgrade.deadline_ms = None
            upgrade.progress = None
            self._save(upgrade, now)
            return
        if (
            campaign is not None
            and campaign.settings.get("rollback")
            and cause in (_WRITE_FAILED, _POWER_LOSS)
        ):
            error += self._rollback(campaign, upgrade, now)
        self._finish(upgrade, UpgradeState.FAILED, now, error)
        if campaign is not None:
            self._check_abort(campaign, now)

    def device_deleted(self, product_key: str, device_key: str, *, purge: bool = False) -> int:
        """A device was deleted (on the loop): its upgrade in progress ends ``aborted`` ("the
        device was deleted"; its campaign goes on without it), the version it reported is
        forgotten (a device registered again under its key is a new one), and with ``purge``
        its upgrade rows are deleted too; returns how many."""
        keys = (product_key, device_key)
        upgrade = self._active.get(keys)
        if upgrade is not None:
            self._finish(upgrade, UpgradeState.ABORTED, self._clock.time_ms(), _DELETED)
        self.versions.pop(keys, None)
        removed = self.records.forget_device(product_key, device_key, upgrades=purge)
        self._drive()
        return removed

    def state(self, product_key: str, device_key: str) -> UpgradeState | None:
        """The state of the device's latest upgrade (None: never targeted)."""
        keys = (product_key, device_key)
        upgrade = self._active.get(keys)
        if upgrade is not None:
            return upgrade.state
        upgrades = self.records.upgrades(device=keys)
        return upgrades[-1].state if upgrades else None

    async def wait(self, product_key: str, device_key: str, limit: float) -> UpgradeState | None:
        """The state of the device's upgrade once over, or as it is after ``limit`` [s] of
        real time."""
        keys = (product_key, device_key)
        if keys in self._active:
            waiter: asyncio.Future[UpgradeState] = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(keys, []).append(waiter)
            try:
                return await asyncio.wait_for(waiter, limit)
            except TimeoutError:
                pass
            finally:
                waiters = self._waiters.get(keys)
                if waiters is not None and waiter in waiters:
                    waiters.remove(waiter)
                    if not waiters:
                        del self._waiters[keys]
        return self.state(*keys)

    # -- the scheduler ---------------------------------------------------------------------------

    def _drive_soon(self) -> None:
        """:meth:`_drive` once, at the end of this pass of the loop: what many devices report
        together (a wave rebooting, a fleet coming back online) costs one pass over the
        upgrades, not one per report."""
        if not self._drive_pending and not self._closed:
            self._drive_pending = True
            asyncio.get_running_loop().call_soon(self._drive_now)

    def _drive_now(self) -> None:
        self._drive_pending = False
        self._drive()

    def _drive(self) -> None:
        """Time out, push, release waves, finish campaigns; arm the timer (idempotent)."""
        if self._closed:
            return
        now = self._clock.time_ms()
        for upgrade in list(self._active.values()):
            if (
                upgrade.state.in_flight
                and upgrade.deadline_ms is not None
                and upgrade.deadline_ms <= now
            ):
                self._fail(
                    upgrade,
                    f"timed out in state {upgrade.state.value} (no end within the campaign's "
                    "timeout after the push)",
                    now,
                )
        due: list[int] = []
        for campaign in list(self._campaigns.values()):
            mine = [u for u in self._active.values() if u.campaign_id == campaign.campaign_id]
            if campaign.state is CampaignState.RUNNING:
                self._push_due(campaign, mine, now, due)
                mine = [u for u in mine if not u.state.final and u.keys in self._active]
                if not mine:
                    campaign.state = CampaignState.FINISHED
                    campaign.finished_ms = now
                    self.records.save_campaign(campaign)
            if campaign.state is not CampaignState.RUNNING and not any(
                u.campaign_id == campaign.campaign_id for u in self._active.values()
            ):
                del self._campaigns[campaign.campaign_id]
        due.extend(
            u.deadline_ms
            for u in self._active.values()
            if u.state.in_flight and u.deadline_ms is not None
        )
        self._timer.arm(min(due) if due else None)
        # presence matters only while upgrades are not over: otherwise no consumer on the tap
        if self._active and self._presence is None:
            self._presence = self._tap.add_callback(self._on_presence, kinds=PresenceChanged)
        elif not self._active and self._presence is not None:
            self._presence.cancel()
            self._presence = None

    def _push_due(self, campaign: Campaign, mine: list[Upgrade], now: int, due: list[int]) -> None:
        """Push the campaign's pending devices that may go now (wave, rate, online)."""
        settings = campaign.settings
        wave = int(settings.get("wave", 0))
        spacing = None if settings.get("rate") is None else round(60_000 / settings["rate"])
        while True:
            for upgrade in sorted(mine, key=lambda u: u.seq):
                if upgrade.state is not UpgradeState.PENDING or upgrade.wave > wave:
                    continue
                if not self._iothub.is_online(*upgrade.keys):
                    continue
                slot = self._next_slot.get(campaign.campaign_id, now)
                if spacing is not None and slot > now:
                    due.append(slot)
                    break
                self._push(campaign, upgrade, now)
                if spacing is not None:
                    self._next_slot[campaign.campaign_id] = max(slot, now) + spacing
            later = [u for u in mine if u.wave > wave and u.state is UpgradeState.PENDING]
            busy = any(  # in flight, or held back by the rate only
                u.wave <= wave
                and (
                    u.state.in_flight
                    or (u.state is UpgradeState.PENDING and self._iothub.is_online(*u.keys))
                )
                for u in mine
            )
            if not later or busy:
                break
            wave += 1
            settings["wave"] = wave
            self.records.save_campaign(campaign)

    def _push(self, campaign: Campaign, upgrade: Upgrade, now: int) -> None:
        offer = self._offer(upgrade)
        if offer is None:
            upgrade.attempts += 1
            self._fail(upgrade, f"firmware {upgrade.to_version} was removed", now)
            return
        upgrade.state = UpgradeState.PUSHED
        upgrade.attempts += 1
        upgrade.pushed_ms = now
        upgrade.progress = None
        upgrade.step = upgrade.desc = None
        upgrade.offline_seen = False
        upgrade.deadline_ms = now + round(float(campaign.settings["timeout"]) * 1000)
        self._save(upgrade, now)
        task = asyncio.get_running_loop().create_task(
            self._send(upgrade, upgrade.attempts, offer),
            name=f"ota push {upgrade.campaign_id} {upgrade.product_key}/{upgrade.device_key}",
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, upgrade: Upgrade, attempt: int, offer: dict[str, object]) -> None:
        """Send the push; a device that was offline gets it again later, an error code
        fails the attempt, no answer leaves it to the timeout."""
        try:
            reply = await self._iothub.send_command(
                *upgrade.keys, TopicKind.OTA_UPGRADE, offer, wait=True
            )
        except DeviceOffline:
            if upgrade.state is UpgradeState.PUSHED and upgrade.attempts == attempt:
                upgrade.state = UpgradeState.PENDING
                upgrade.attempts -= 1
                upgrade.deadline_ms = None
                self._save(upgrade, self._clock.time_ms())
            return
        except (TimeoutError, ClosedError):
            return
        except Exception:
            log.warning("OTA push to %s/%s failed", *upgrade.keys, exc_info=True)
            return
        if reply is None or reply.ok or self._closed:
            return
        if upgrade.attempts == attempt and self._active.get(upgrade.keys) is upgrade:
            message = f": {reply.message}" if reply.message else ""
            self._fail(
                upgrade,
                f"the device answered the upgrade push with code {reply.code}{message}",
                self._clock.time_ms(),
            )
            self._drive_soon()
