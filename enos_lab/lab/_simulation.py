"""Simulated fleets from the facade: :meth:`Simulation.simulate` and the :class:`LabFleet` it
returns.

``lab.simulate(product_key, count=100, profile="pv_inverter", interval=60, seed=1)`` registers
the devices it needs, starts a :class:`~enos_lab.sim.Fleet` of them on the lab's event loop and
clock and returns a :class:`LabFleet`: the fleet's blocking methods (``run``, ``stats``, the
fault calls, ``stop``) and their coroutine forms (``arun``, ``astats``, ...), each with the
engine's signature and docstring. The lab stops its fleets before it stops itself.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import ssl
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

from ..ca import KeyType, client_context
from ..device import DEFAULT_BACKOFF, Backoff
from ..errors import InvalidArgument, NotFound
from ..registry import NodeType
from ..sim import PROFILES, Fleet, Link, Profile, profile_for
from ._core import LabCore, coroutine_form_of, plain_call

__all__ = ["LabFleet", "Simulation"]

log = logging.getLogger("enos_lab.lab")

P = ParamSpec("P")
T = TypeVar("T")


def _blocking(
    method: Callable[Concatenate[Any, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[LabFleet, P], T]:
    """The blocking form of a coroutine method of :class:`~enos_lab.sim.Fleet`, run on the
    lab's loop (same signature and docstring)."""

    def blocking(self: LabFleet, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._lab.run(method(self._fleet, *args, **kwargs))

    return _like(blocking, method)


def _on_loop(method: Callable[Concatenate[Any, P], T]) -> Callable[Concatenate[LabFleet, P], T]:
    """A plain method of :class:`~enos_lab.sim.Fleet`, called on the lab's loop (same
    signature and docstring)."""

    def on_loop(self: LabFleet, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._lab.run(plain_call(method, self._fleet, *args, **kwargs))

    return _like(on_loop, method)


def _like(wrapper: Callable[..., T], method: Callable[..., Any]) -> Callable[..., T]:
    wrapper.__name__ = wrapper.__qualname__ = method.__name__
    wrapper.__signature__ = inspect.signature(method)  # type: ignore[attr-defined]
    wrapper.__doc__ = method.__doc__
    return wrapper


class LabFleet:
    """A :class:`~enos_lab.sim.Fleet` running on a lab's event loop and clock, made by
    :meth:`Lab.simulate <enos_lab.lab.Lab.simulate>`.

    Every method blocks until done (it runs on the lab's loop); the ``a``-prefixed forms are
    coroutines for asyncio users. ``run(duration=timedelta(days=1), progress=True)`` simulates
    (on the lab's :class:`~enos_lab.clock.SimulatedClock`; in real time on the system clock),
    ``stats()`` / ``totals()`` / ``reconnections()`` count, the fault calls (``drop``,
    ``duplicate``, ``delay``, ``reorder``, ``partition``, ``heal``, ``clear``, ``skew``,
    ``power_loss``, ``reconnect_storm``, ``wrong_credentials``) inject faults (see
    :mod:`enos_lab.sim._fleet_faults`), ``stop()`` disconnects the devices. The asyncio engine
    is :attr:`fleet`.
    """

    def __init__(self, lab: Simulation, fleet: Fleet) -> None:
        self._lab = lab
        self._fleet = fleet

    @property
    def fleet(self) -> Fleet:
        """The asyncio :class:`~enos_lab.sim.Fleet` (its coroutines run on the lab's loop)."""
        return self._fleet

    @property
    def link(self) -> Link | None:
        """The link the devices connect through (``None``: directly)."""
        return self._fleet.link

    @property
    def device_keys(self) -> list[str]:
        """The devices' keys, in fleet order."""
        return self._fleet.device_keys

    @property
    def running(self) -> bool:
        """Whether the fleet runs (started, not stopped)."""
        return self._fleet.running

    def __len__(self) -> int:
        return len(self._fleet)

    def __repr__(self) -> str:
        return repr(self._fleet)

    run = _blocking(Fleet.run)
    stats = _on_loop(Fleet.stats)
    totals = _on_loop(Fleet.totals)
    reconnections = _on_loop(Fleet.reconnections)
    latencies = _on_loop(Fleet.latencies)
    drop = _on_loop(Fleet.drop)
    duplicate = _on_loop(Fleet.duplicate)
    delay = _on_loop(Fleet.delay)
    reorder = _on_loop(Fleet.reorder)
    partition = _on_loop(Fleet.partition)
    heal = _on_loop(Fleet.heal)
    clear = _on_loop(Fleet.clear)
    skew = _on_loop(Fleet.skew)
    power_loss = _blocking(Fleet.power_loss)
    reconnect_storm = _blocking(Fleet.reconnect_storm)
    wrong_credentials = _blocking(Fleet.wrong_credentials)

    def stop(self) -> None:
        """Stop sampling, disconnect every device and close the fleet's own link (idempotent;
        the lab stops its fleets when it stops)."""
        self._lab._forget_fleet(self)
        if self._lab.running:
            self._lab.run(self._fleet.stop())

    arun = coroutine_form_of(run)
    astats = coroutine_form_of(stats)
    atotals = coroutine_form_of(totals)
    areconnections = coroutine_form_of(reconnections)
    alatencies = coroutine_form_of(latencies)
    adrop = coroutine_form_of(drop)
    aduplicate = coroutine_form_of(duplicate)
    adelay = coroutine_form_of(delay)
    areorder = coroutine_form_of(reorder)
    apartition = coroutine_form_of(partition)
    aheal = coroutine_form_of(heal)
    aclear = coroutine_form_of(clear)
    askew = coroutine_form_of(skew)
    apower_loss = coroutine_form_of(power_loss)
    areconnect_storm = coroutine_form_of(reconnect_storm)
    awrong_credentials = coroutine_form_of(wrong_credentials)
    astop = coroutine_form_of(stop)


class Simulation(LabCore):
    """Simulated fleets (mixed into :class:`~enos_lab.lab.Lab`)."""

    def simulate(
        self,
        product_key: str,
        count: int = 10,
        *,
        profile: Profile | str | None = None,
        interval: float = 60.0,
        seed: int = 0,
        device_keys: Sequence[str] | None = None,
        key_prefix: str = "sim-",
        spread: bool = False,
        states: int | None = None,
        link: bool = False,
        backoff: Backoff = DEFAULT_BACKOFF,
        timeout: float = 30.0,
        max_in_flight: int = 4,
        settle: float = 2.0,
        tls: bool = False,
    ) -> LabFleet:
        """Simulate ``count`` devices of ``product_key`` following a profile; returns the
        running :class:`LabFleet` (``fleet.run(duration=timedelta(days=1))`` next).

        The devices are ``key_prefix`` + a number (``sim-0000``, ...), or ``device_keys``;
        those not registered yet are registered. ``profile`` is a
        :class:`~enos_lab.sim.Profile` or a library model id (``None``: the product's model,
        which must have one, see :data:`~enos_lab.sim.PROFILES`). The fleet runs on the lab's
        loop and clock: on a :class:`~enos_lab.clock.SimulatedClock` ``run`` simulates
        deterministically for ``seed``; on the system clock the devices post in real time
        until ``stop()``. ``link=True`` connects them through a fault-injecting
        :class:`~enos_lab.sim.Link` (needed by the message faults, partitions, power losses
        and reconnect storms; it costs some speed). The other parameters are
        :class:`~enos_lab.sim.Fleet`'s (each device posts every ``interval`` seconds; keep
        alive: three intervals, at least 60 s). ``tls=True`` connects the devices to the lab's
        TLS listener (the lab needs a ``tls_port``); for a product that requires certificates,
        each device gets a certificate of its own first (ECC P-256, issued by the lab's CA) and
        logs in with mutual TLS. Not with ``link``. Raises
        :class:`~enos_lab.errors.NotFound` for an unknown product and
        :class:`~enos_lab.errors.InvalidArgument` for a sub-device product or a profile of
        another model (a profile of the product's parent model fits: a child model has every
        element of its parent).
        """
        chosen = self._profile_for(product_key, profile)
        keys = list(device_keys) if device_keys is not None else _keys(key_prefix, count)
        credentials = self._fleet_credentials(product_key, keys)
        contexts = self._fleet_tls(product_key, keys) if tls else None
        fleet = Fleet(
            self.host,
            self.tls_port if tls else self.port,
            credentials,
            chosen,
            interval=interval,
            clock=self.clock,
            seed=seed,
            spread=spread,
            states=states,
            link=link,
            backoff=backoff,
            timeout=timeout,
            max_in_flight=max_in_flight,
            settle=settle,
            ssl=contexts,
        )
        self.run(fleet.start())
        handle = LabFleet(self, fleet)
        self._fleet_list().append(handle)
        return handle

    asimulate = coroutine_form_of(simulate)

    def stop(self) -> None:
        """Stop the simulated fleets, then the hub, the services and the loop thread; remove a
        temporary data directory.

        Idempotent. Devices still connected are disconnected; the measurepoints the hub has
        received are stored and answered first; commands still waiting for a reply fail with
        :class:`~enos_lab.errors.ClosedError`.
        """
        for fleet in list(self._fleet_list()):
            try:
                fleet.stop()
            except Exception:
                log.exception("stopping a simulated fleet failed")
        super().stop()

    async def astop(self) -> None:
        """Coroutine form of :meth:`stop` (runs it in a worker thread, so that the caller's
        event loop keeps running)."""
        await asyncio.to_thread(self.stop)

    # -- internals ----------------------------------------------------------------------------

    def _fleet_list(self) -> list[LabFleet]:
        fleets: list[LabFleet] = vars(self).setdefault("_fleets", [])
        return fleets

    def _forget_fleet(self, fleet: LabFleet) -> None:
        fleets = self._fleet_list()
        if fleet in fleets:
            fleets.remove(fleet)

    def _profile_for(self, product_key: str, profile: Profile | str | None) -> Profile:
        product = self.registry.get_product(product_key)
        if product.node_type is NodeType.SUB_DEVICE:
            raise InvalidArgument(
                f"product {product_key!r} is a sub-device product: its devices cannot connect "
                "directly, so they cannot be simulated as a fleet"
            )
        if profile is None:
            lineage = [] if product.model_id is None else self._lineage(product.model_id)
            known = [model_id for model_id in lineage if model_id in PROFILES]
            if not known:
                raise InvalidArgument(
                    f"product {product_key!r} (model {product.model_id!r}) has no profile of its "
                    f"own: pass profile= (profiles exist for {', '.join(sorted(PROFILES))})"
                )
            return profile_for(known[0])
        chosen = profile_for(profile) if isinstance(profile, str) else profile
        if product.model_id is not None and chosen.model_id not in self._lineage(product.model_id):
            raise InvalidArgument(
                f"profile of model {chosen.model_id!r} does not fit product {product_key!r} "
                f"(model {product.model_id!r})"
            )
        return chosen

    def _lineage(self, model_id: str) -> list[str]:
        """The model and its ancestors: a profile of a parent fits a child model, which has
        every element of its parent."""
        lineage: list[str] = []
        current: str | None = model_id
        while current is not None and current not in lineage:
            lineage.append(current)
            try:
                current = self.models.get(current).parent_id
            except NotFound:
                break
        return lineage

    def _fleet_tls(
        self, product_key: str, keys: Sequence[str]
    ) -> ssl.SSLContext | Callable[[str, str], ssl.SSLContext]:
        """The client TLS of a fleet's devices: one context trusting the lab's CA, or for a
        product that requires certificates one per device, with a certificate issued now."""
        ca = self.ca
        if not self.registry.get_product(product_key).certificate_required:
            return client_context(ca.ca_certificate_path)
        contexts = {}
        for key in keys:
            asset_id = self.registry.get_device(product_key, key).asset_id
            issued = ca.issue(product_key, key, asset_id=asset_id, key_type=KeyType.EC)
            contexts[key] = client_context(ca.ca_certificate_path, issued)
        log.info("issued %d device certificates for a fleet of %s", len(keys), product_key)
        return lambda _product_key, device_key: contexts[device_key]

    def _fleet_credentials(
        self, product_key: str, keys: Sequence[str]
    ) -> list[tuple[str, str, str]]:
        """``(product_key, device_key, device_secret)`` of each key, registering the new ones."""
        if not keys:
            raise InvalidArgument("a fleet needs at least one device (count >= 1)")
        known = self.registry.export_credentials(product_key)
        secrets = dict(zip(known["device_key"], known["device_secret"], strict=True))
        missing = [key for key in keys if key not in secrets]
        if missing:
            rows = [{"product_key": product_key, "device_key": key} for key in missing]
            result = self.registry.register_devices(rows)
            if len(result.errors):
                first = result.errors.iloc[0]
                raise InvalidArgument(
                    f"cannot register device {first['device_key']!r} of product "
                    f"{product_key!r} for the fleet: {first['error']}"
                )
            new = result.registered
            secrets.update(zip(new["device_key"], new["device_secret"], strict=True))
            log.info("registered %d devices of product %s for a fleet", len(missing), product_key)
        credentials = []
        for key in keys:
            secret = secrets.get(key)
            if not secret:
                raise InvalidArgument(
                    f"device {product_key}/{key} has no device secret yet (dynamic activation); "
                    "a fleet logs in with device secrets"
                )
            credentials.append((product_key, key, str(secret)))
        return credentials


def _keys(prefix: str, count: int) -> list[str]:
    if not (isinstance(count, int) and count >= 1):
        raise InvalidArgument(f"count must be an int >= 1, got {count!r}")
    width = max(4, len(str(count - 1)))
    return [f"{prefix}{i:0{width}d}" for i in range(count)]
