"""A firmware upgrade campaign over a fleet: how long the lab takes to upgrade every device.

Each run starts a lab (127.0.0.1, port 0, a temporary data directory), registers ``--devices``
devices of one product with firmware 1.0.0 and 1.1.0 (``--size`` bytes each), connects them
over TCP as devices of the lab's device SDK, each with a :class:`~enos_lab.ota.FirmwareAgent`
(it reports its version, downloads the pushed firmware over HTTP from the lab's firmware
server, checks its digest, reports progress and reconnects with the new version), then times
``start_ota_campaign`` until every device's upgrade is ``succeeded`` (success is the version
reported after the reconnect). The devices run on one event loop in this process, beside the
lab's own loop thread, so the figure includes their work: it is the time a notebook user
waits, not the lab's cost alone. A campaign view (``ota_campaign``) is polled every 0.2 s, as
a progress view would.

Prints the median over ``--runs`` of the campaign time and of the devices upgraded per second,
and every run's values. Exits 1 if a run does not finish within ``--limit`` seconds or a device
fails.

Run: ``.venv/bin/python benchmarks/ota_campaign.py [--devices 1000] [--runs 3] [--size 4096]``
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time

from enos_lab import Lab
from enos_lab.device import DeviceClient
from enos_lab.ota import FirmwareAgent


async def campaign(lab: Lab, pk: str, secrets: dict[str, str], limit: float) -> float:
    """Connect the devices, run the campaign to its end; its duration [s]."""
    clients = []
    for key, secret in secrets.items():
        client = DeviceClient(lab.host, lab.port, pk, key, secret, timeout=60)
        FirmwareAgent(client, "1.0.0", timeout=60)
        clients.append(client)
    try:
        await asyncio.gather(*(client.connect() for client in clients))
        while True:  # every agent reported 1.0.0 after its login
            versions = [lab.iothub.firmware_version(pk, key) for key in secrets]  # type: ignore[union-attr]
            if all(version == "1.0.0" for version in versions):
                break
            await asyncio.sleep(0.05)
        start = time.perf_counter()
        campaign_id = await lab.astart_ota_campaign(pk, "1.1.0")
        while True:
            states = (await lab.aota_campaign(campaign_id))["state"]
            if (states == "succeeded").all():
                return time.perf_counter() - start
            if states.isin(["failed", "aborted", "skipped"]).any():
                raise RuntimeError(f"devices did not upgrade: {states.value_counts().to_dict()}")
            if time.perf_counter() - start > limit:
                raise TimeoutError(f"not over after {limit} s: {states.value_counts().to_dict()}")
            await asyncio.sleep(0.2)
    finally:
        await asyncio.gather(*(client.disconnect() for client in clients))


def one_run(devices: int, size: int, limit: float, seed: int) -> float:
    with Lab(port=0, rng=random.Random(seed)) as lab:
        pk = lab.create_product("Meter").product_key
        secrets = {
            f"d{i}": lab.register_device(pk, device_key=f"d{i}").device_secret
            for i in range(devices)
        }
        lab.add_firmware(pk, "1.0.0", b"\x00" * size)
        lab.add_firmware(pk, "1.1.0", b"\x01" * size)
        return asyncio.run(campaign(lab, pk, secrets, limit))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=1000, help="devices in the campaign")
    p.add_argument("--runs", type=int, default=3, help="runs (median reported)")
    p.add_argument("--size", type=int, default=4096, help="firmware size [bytes]")
    p.add_argument("--limit", type=float, default=600.0, help="longest run [s]")
    args = p.parse_args()
    times: list[float] = []
    failed = False
    for run in range(args.runs):
        try:
            times.append(one_run(args.devices, args.size, args.limit, seed=run))
        except (RuntimeError, TimeoutError) as exc:
            print(f"run {run + 1}: failed: {exc}")
            failed = True
    if times:
        median = statistics.median(times)
        print(f"OTA campaign, {args.devices:,} devices, firmware of {args.size:,} bytes")
        print(f"  campaign time [s] (median)         {median:8.2f}")
        print(f"  devices upgraded per second       {args.devices / median:8.1f}")
        print("  runs [s]: " + " / ".join(f"{t:.2f}" for t in times))
    sys.exit(1 if failed or not times else 0)


if __name__ == "__main__":
    main()
