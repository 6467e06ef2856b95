"""Settings of the IoT Hub service layer and the per-product raw codec protocol."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..errors import InvalidArgument

__all__ = ["IotHubConfig", "OtaHandler", "RawCodec"]


@dataclass(frozen=True, slots=True)
class IotHubConfig:
    """Settings of an :class:`~enos_lab.iothub.IotHub`.

    Times are in seconds, on the lab's clock (a :class:`~enos_lab.clock.SimulatedClock` runs
    activation pushes, command timeouts and the login throttle in simulated time), except
    ``python_sdk_connack_delay``, which paces real I/O. The login throttle follows EnOS (4
    failures within 120 s block the device for 300 s), counting per source address and
    identity: failed logins sent from one address never refuse a correct login from another.
    Every refused login goes into the login log (``IotHub.refused_logins``,
    ``Lab.refused_logins``); ``IotHub.unblock_login`` lifts a block.
    """

    activation_delay: float = 0.2
    """Delay after CONNACK before the first ``activate/info`` push. [s]"""
    activation_resend: float = 2.0
    """Interval between re-sends of ``activate/info`` until an ``info_reply`` with code 200. [s]"""
    activation_timeout: float = 30.0
    """Give up re-sending ``activate/info`` after this long. [s]"""
    max_online_sub_devices: int = 200
    """Most sub-devices one gateway may have logged in at once (EnOS limit)."""
    product_device_quota: int = 10_000
    """Most devices a product may hold for ``thing.device.register`` to add more (EnOS 739
    beyond it): gateways register sub-devices through MQTT, and one gateway must not grow the
    registry without bound. Devices registered through the API are not limited."""
    max_register_entries: int = 1000
    """Most devices one ``thing.device.register`` request may carry (the SDKs' own check)."""
    strict_methods: bool = False
    """True: answer 1260 when a request's ``method`` does not fit its topic."""
    max_login_failures: int = 4
    """Failed logins within ``login_failure_window`` that block a device."""
    login_failure_window: float = 120.0
    """Window in which failed logins are counted. [s]"""
    login_block: float = 300.0
    """How long a throttled device is refused (from the address its failures came from). [s]"""
    max_login_tracked: int = 10_000
    """Most (source address, identity) pairs the login throttle keeps at once, failure records
    and blocks together (about 0.35 KB each, so 3.5 MB at most). Failure records are dropped once
    older than ``login_failure_window`` and blocks once ended; beyond the bound the oldest
    failure records go first, then the oldest blocks."""
    login_log_size: int = 10_000
    """Login attempts kept in the login log, newest last (about 0.4 KB each, so 4 MB at most);
    the oldest go first. 0 keeps none."""
    command_timeout: float = 30.0
    """Default wait for a device's reply to a command. [s]"""
    logged_unknown_topics: int = 3
    """Publishes to ``/sys/`` or ``/ext/`` topics outside the EnOS catalogue (dropped) that are
    logged at WARNING per connection; after these, only the count at 10, 100, 1000, ..."""
    python_sdk_connack_delay: float = 0.05
    """Delay of the CONNACK of logins shaped like the official Python SDK's (a timestamp with a
    decimal point): that SDK loses a CONNACK that arrives before it starts waiting and stalls
    10 s (protocol reference 4, item 9). Other logins are answered at once. Real time (not the
    lab's clock): it waits for the SDK's thread, which runs in real time. [s]"""

    def __post_init__(self) -> None:
        for name in ("activation_resend", "activation_timeout", "command_timeout"):
            if getattr(self, name) <= 0:
                raise InvalidArgument(f"IotHubConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.python_sdk_connack_delay < 0:
            raise InvalidArgument(
                "IotHubConfig.python_sdk_connack_delay must be >= 0, "
                f"got {self.python_sdk_connack_delay}"
            )
        if self.activation_delay < 0:
            raise InvalidArgument(
                f"IotHubConfig.activation_delay must be >= 0, got {self.activation_delay}"
            )
        if self.max_login_tracked < 1:
            raise InvalidArgument(
                f"IotHubConfig.max_login_tracked must be >= 1, got {self.max_login_tracked}"
            )
        if self.login_log_size < 0:
            raise InvalidArgument(
                f"IotHubConfig.login_log_size must be >= 0, got {self.login_log_size}"
            )
        if self.logged_unknown_topics < 0:
            raise InvalidArgument(
                f"IotHubConfig.logged_unknown_topics must be >= 0, got {self.logged_unknown_topics}"
            )
        for name in ("product_device_quota", "max_register_entries"):
            if getattr(self, name) < 1:
                raise InvalidArgument(
                    f"IotHubConfig.{name} must be >= 1, got {getattr(self, name)}"
                )
        if self.max_online_sub_devices < 0:
            raise InvalidArgument(
                "IotHubConfig.max_online_sub_devices must be >= 0, "
                f"got {self.max_online_sub_devices}"
            )


class RawCodec(Protocol):
    """Translates a CUSTOM-format product's raw payloads (protocol reference 7.5)."""

    def decode_upstream(self, payload: bytes) -> bytes:
        """Raw ``up_raw`` bytes -> an EnOS JSON envelope (a request, or a reply to a command)."""
        ...

    def encode_downstream(self, envelope: bytes) -> bytes:
        """A JSON command envelope -> the raw ``down_raw`` payload."""
        ...

    def encode_reply(self, reply: bytes) -> bytes:
        """A JSON reply envelope -> the raw ``up_raw_reply`` payload."""
        ...


class OtaHandler(Protocol):
    """What the hub does with OTA requests (protocol reference 10); replaceable."""

    def inform(self, product_key: str, device_key: str, version: str) -> None:
        """A device reported its firmware ``version``."""
        ...

    def progress(self, product_key: str, device_key: str, step: str, desc: str) -> int:
        """A device reported upgrade progress; returns the reply code (764: no task)."""
        ...

    def get_versions(self, product_key: str, device_key: str) -> list[dict[str, object]]:
        """The firmware objects offered to the device (``ota/device/getversion``)."""
        ...
