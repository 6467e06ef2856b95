"""Commands of a running lab: recorded, instant or cached, waited for or not.

Theory of operation. :meth:`CommandService.start` (on the lab's loop, after the IoT hub
services) opens the command records (``commands.sqlite3`` in the data directory, in a worker
thread; commands a previous run left unfinished are marked failed).
:meth:`CommandService.submit` records a command and returns a :class:`CommandHandle` at once;
a task the service owns sends it through :meth:`IotHub.send_command
<enos_lab.iothub.IotHub.send_command>` and records the reply (or the timeout, on the lab
clock) when it comes.

EnOS issuing semantics: an *instant* command (no ``pending_ttl``) to an offline device fails at
once (:class:`~enos_lab.errors.DeviceOffline`, recorded as failed). A *cached* command
(``pending_ttl`` [s], EnOS ``pendingTtl``) goes into its device's queue: the queue is
delivered in order, one at a time (the next once the previous one was answered or timed
out), while the device is online, starting when it comes online
(:class:`~enos_lab.tap.PresenceChanged`, heard only while cached commands wait: otherwise
the service is no consumer of the tap). At most :data:`MAX_CACHED` commands wait per device
(one more: :class:`~enos_lab.errors.LimitExceeded`, nothing recorded). A cached command not
sent within its ``pending_ttl`` is marked expired (one :class:`~enos_lab.clock.DeadlineTimer`
on the lab clock, armed at the earliest expiry) and its handle raises
:class:`~enos_lab.errors.CommandExpired`. Raw commands (``down_raw`` bytes) are recorded with
their bytes as hex text, params and reply alike.

:meth:`CommandService.stop` (after the IoT hub services stopped, so that commands waiting for
a reply have failed with :class:`~enos_lab.errors.ClosedError`) leaves the tap, cancels the
timer, marks the commands still queued failed, awaits its tasks and closes the records.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..clock import Clock, DeadlineTimer
from ..enos import Reply, TopicKind
from ..errors import ClosedError, CommandExpired, DeviceOffline, InvalidArgument, LimitExceeded
from ..iothub import IotHub
from ..tap import PresenceChanged, Tap, TapCallback
from ._records import COMMANDS_FILE, CommandRecords, CommandStatus

__all__ = ["MAX_CACHED", "CommandHandle", "CommandService"]

log = logging.getLogger(__name__)

MAX_CACHED = 50
"""Most cached commands waiting per device (EnOS). [commands]"""

_STOPPED = "the lab stopped before the command finished"


class CommandHandle:
    """A command on its way (:meth:`Lab.invoke_service <enos_lab.lab.Lab.invoke_service>`
    with ``wait=False``): :attr:`id` (its record, :meth:`Lab.command
    <enos_lab.lab.Lab.command>`), :attr:`status`, :meth:`result` (blocking) or ``await
    handle`` for what the device answered.

    The result is what the synchronous call would return; the errors are those it would
    raise (:class:`~enos_lab.errors.CommandFailed`, :class:`TimeoutError`,
    :class:`~enos_lab.errors.CommandExpired`, ...).
    """

    __slots__ = ("_convert", "_future", "_records", "id")

    def __init__(
        self,
        command_id: str,
        future: concurrent.futures.Future[Reply],
        records: CommandRecords,
        convert: Callable[[Reply], Any],
    ) -> None:
        self.id = command_id
        """The command's id in the records."""
        self._future = future
        self._records = records
        self._convert = convert

    def __repr__(self) -> str:
        return f"CommandHandle({self.id!r})"

    @property
    def status(self) -> CommandStatus:
        """The last step the command reached (from its record)."""
        return self._records.get(self.id).status

    def done(self) -> bool:
        """Whether the command finished (answered, failed, expired or timed out)."""
        return self._future.done()

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the command to finish, at most ``timeout`` [s] of real time (None: as long
        as it takes; :class:`TimeoutError` after, the command goes on), and return its
        result or raise its error."""
        try:
            reply = self._future.result(timeout)
        except concurrent.futures.TimeoutError:  # the builtin TimeoutError since Python 3.11
            if self._future.done():
                raise  # the command's own end: the device did not answer in time
            raise TimeoutError(
                f"command {self.id} did not finish within {timeout} s (it goes on)"
            ) from None
        return self._convert(reply)

    def __await__(self) -> Generator[Any, None, Any]:
        reply = yield from asyncio.wrap_future(self._future).__await__()
        return self._convert(reply)


@dataclass(slots=True)
class _Command:
    command_id: str
    product_key: str
    device_key: str
    kind: TopicKind
    params: object
    item_id: str
    timeout: float | None
    future: concurrent.futures.Future[Reply]
    expires_ms: int | None = None
    service_id: str | None = None  # the method's service where the topic's id is another


@dataclass(slots=True)
class _Queue:
    waiting: deque[_Command] = field(default_factory=deque)
    busy: bool = False


class CommandService:
    """The commands of a running lab (see the module docstring). Build it with :meth:`start`;
    use :meth:`submit` on the lab's loop, :attr:`records` from any thread."""

    def __init__(self, records: CommandRecords, iothub: IotHub, tap: Tap, clock: Clock) -> None:
        self.records = records
        self._iothub = iothub
        self._clock = clock
        self._queues: dict[tuple[str, str], _Queue] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer = DeadlineTimer(clock, self._expire)
        self._tap = tap
        self._presence: TapCallback | None = None  # on the tap only while commands wait
        self._closed = False

    @classmethod
    async def start(cls, data_dir: Path, iothub: IotHub, clock: Clock, tap: Tap) -> CommandService:
        """Open the records in ``data_dir`` and listen on ``tap`` (on the loop)."""
        records = await asyncio.to_thread(CommandRecords, data_dir / COMMANDS_FILE, clock=clock)
        try:
            left = await asyncio.to_thread(records.fail_unfinished, _STOPPED)
        except BaseException:
            await asyncio.to_thread(records.close)
            raise
        if left:
            log.info("%d command(s) left unfinished by the last run marked failed", left)
        return cls(records, iothub, tap, clock)

    async def stop(self) -> None:
        """Leave the tap, fail the queued commands, await the tasks, close the records."""
        self._closed = True
        if self._presence is not None:
            self._presence.cancel()
            self._presence = None
        self._timer.cancel()
        queues, self._queues = self._queues, {}
        for queue in queues.values():
            for command in queue.waiting:
                self._end(command, CommandStatus.FAILED, _STOPPED, ClosedError(_STOPPED))
        tasks = list(self._tasks)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=1.0)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await asyncio.to_thread(self.records.close)

    # -- submitting -------------------------------------------------------------------------

    def submit(
        self,
        product_key: str,
        device_key: str,
        kind: TopicKind,
        params: object,
        *,
        item_id: str = "",
        timeout: float | None = None,
        pending_ttl: float | None = None,
        convert: Callable[[Reply], Any],
        service_id: str | None = None,
    ) -> CommandHandle:
        """Record a command and send it (see the module docstring); on the loop.

        ``item_id`` and ``service_id`` are :meth:`IotHub.send_command
        <enos_lab.iothub.IotHub.send_command>`'s: a legacy RRPC request (``RRPC_REQUEST``)
        names its service with ``service_id`` and gets a fresh rrpc id from the IoT hub at each
        sending; it is recorded as kind ``rrpc:{service_id}``."""
        if self._closed:
            raise ClosedError("the command service stopped")
        if pending_ttl is not None and (
            isinstance(pending_ttl, bool)
            or not isinstance(pending_ttl, int | float)
            or not pending_ttl > 0
        ):
            raise InvalidArgument(f"pending_ttl must be > 0 seconds or None, got {pending_ttl!r}")
        keys = (product_key, device_key)
        online = self._iothub.is_online(*keys)
        queue = self._queues.get(keys)
        if pending_ttl is not None and queue is not None and len(queue.waiting) >= MAX_CACHED:
            raise LimitExceeded(
                f"device {product_key}/{device_key} has {MAX_CACHED} cached commands waiting "
                f"already (EnOS: at most {MAX_CACHED} per device)"
            )
        kind_name = _kind_name(kind, item_id if service_id is None else service_id)
        expires_ms = (
            None if pending_ttl is None else self._clock.time_ms() + round(pending_ttl * 1000)
        )
        recorded = params.hex() if isinstance(params, bytes | bytearray) else params
        command_id = self.records.create(product_key, device_key, kind_name, recorded, expires_ms)
        future: concurrent.futures.Future[Reply] = concurrent.futures.Future()
        command = _Command(
            command_id,
            product_key,
            device_key,
            kind,
            params,
            item_id,
            timeout,
            future,
            service_id=service_id,
        )
        handle = CommandHandle(command_id, future, self.records, convert)
        if pending_ttl is None:
            if not online:
                error = DeviceOffline(f"device {product_key}/{device_key} is offline")
                self._end(command, CommandStatus.FAILED, "the device is offline", error)
                raise error
            self._spawn(command, None)
            return handle
        command.expires_ms = expires_ms
        queue = self._queues.setdefault(keys, _Queue())
        if online and not queue.busy and not queue.waiting:
            queue.busy = True
            self._spawn(command, queue)
            return handle
        self.records.queued(command_id, command.expires_ms)
        queue.waiting.append(command)
        self._arm()
        return handle

    def _spawn(self, command: _Command, queue: _Queue | None) -> None:
        task = asyncio.get_running_loop().create_task(
            self._send(command, queue), name=f"command {command.command_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, command: _Command, queue: _Queue | None) -> None:
        """Send ``command``, record how it ends, then (a cached one) the next of its queue."""
        keys = (command.product_key, command.device_key)
        try:
            self.records.sent(command.command_id)
            sending = self._iothub.send_command(
                *keys,
                command.kind,
                command.params,
                item_id=command.item_id,
                wait=True,
                timeout=command.timeout,
                service_id=command.service_id,
            )
            try:
                reply = await sending
            except DeviceOffline as exc:
                if queue is not None and not self._closed:  # went offline: back to the front
                    self.records.queued(command.command_id, command.expires_ms)
                    queue.waiting.appendleft(command)
                    self._arm()
                    return
                self._end(command, CommandStatus.FAILED, "the device is offline", exc)
                return
            except TimeoutError:
                error = TimeoutError(
                    f"device {command.product_key}/{command.device_key} did not answer command "
                    f"{command.command_id} in time"
                )
                self._end(command, CommandStatus.TIMED_OUT, "no reply in time", error)
                return
            except ClosedError as exc:
                self._end(command, CommandStatus.FAILED, _STOPPED, exc)
                return
            except Exception as exc:
                self._end(command, CommandStatus.FAILED, f"{type(exc).__name__}: {exc}", exc)
                return
            assert reply is not None  # sent with wait=True
            data = reply.data.hex() if isinstance(reply.data, bytes) else reply.data
            self.records.replied(command.command_id, reply.code, reply.message, data)
            if not command.future.done():
                command.future.set_result(reply)
        except ClosedError as exc:  # the records closed under us (the lab stopping)
            if not command.future.done():
                command.future.set_exception(exc)
        finally:
            if queue is not None:
                queue.busy = False
                self._pump(keys)

    def _end(
        self, command: _Command, status: CommandStatus, reason: str, error: BaseException
    ) -> None:
        with contextlib.suppress(ClosedError):  # the records closed: the lab is stopping
            self.records.finished(command.command_id, status, reason)
        if not command.future.done():
            command.future.set_exception(error)

    # -- cached commands --------------------------------------------------------------------

    def _pump(self, keys: tuple[str, str]) -> None:
        """Send the next cached command of ``keys`` if the device is online and idle."""
        queue = self._queues.get(keys)
        if queue is None or self._closed:
            return
        if not queue.busy and queue.waiting and self._iothub.is_online(*keys):
            queue.busy = True
            self._spawn(queue.waiting.popleft(), queue)
            self._arm()
        elif not queue.busy and not queue.waiting:
            del self._queues[keys]

    def _on_presence(self, event: PresenceChanged) -> None:
        if event.online:
            self._pump((event.product_key, event.device_key))

    def _expire(self) -> None:
        now = self._clock.time_ms()
        for keys, queue in list(self._queues.items()):
            kept: deque[_Command] = deque()
            for command in queue.waiting:
                if command.expires_ms is not None and command.expires_ms <= now:
                    error = CommandExpired(
                        f"cached command {command.command_id} to device {keys[0]}/{keys[1]} "
                        "expired before it could be sent (pending_ttl passed)"
                    )
                    self._end(command, CommandStatus.EXPIRED, "pending_ttl passed", error)
                else:
                    kept.append(command)
            queue.waiting = kept
            if not queue.busy and not queue.waiting:
                del self._queues[keys]
        self._arm()

    def _arm(self) -> None:
        """Arm the timer at the earliest expiry, and listen for devices coming online only
        while cached commands wait (with none, the tap has no consumer for it)."""
        due = [
            command.expires_ms
            for queue in self._queues.values()
            for command in queue.waiting
            if command.expires_ms is not None
        ]
        self._timer.arm(min(due) if due else None)
        if due and self._presence is None and not self._closed:
            self._presence = self._tap.add_callback(self._on_presence, kinds=PresenceChanged)
        elif not due and self._presence is not None:
            self._presence.cancel()
            self._presence = None

    def delete_device(self, product_key: str, device_key: str) -> int:
        """Forget a deleted device's commands (a purged deletion, on the loop): its cached
        commands fail (``the device was deleted``) and every record of it is deleted;
        returns how many records."""
        queue = self._queues.pop((product_key, device_key), None)
        if queue is not None:
            reason = "the device was deleted"
            for command in queue.waiting:
                self._end(command, CommandStatus.FAILED, reason, DeviceOffline(reason))
            queue.waiting.clear()
            self._arm()
        return self.records.delete_device(product_key, device_key)

    def queued(self, product_key: str, device_key: str) -> int:
        """How many cached commands wait for the device (on the loop)."""
        queue = self._queues.get((product_key, device_key))
        return 0 if queue is None else len(queue.waiting)


def _kind_name(kind: TopicKind, item_id: str) -> str:
    if kind is TopicKind.SERVICE_INVOKE:
        return item_id
    if kind is TopicKind.RRPC_REQUEST:
        return f"rrpc:{item_id}"
    if kind is TopicKind.MEASUREPOINT_SET:
        return "measurepoint.set"
    if kind is TopicKind.MEASUREPOINT_GET:
        return "measurepoint.get"
    if kind.is_raw:
        return "raw"
    return kind.name.lower()
