"""TLS listener benchmark: the hub against mosquitto, both serving MQTT over TLS with the same
certificates from the lab's CA.

Usage::

    python benchmarks/tls_listener.py [--runs 5] [--only server,mutual,memory,memory-mutual]
        [--tls 1.2,1.3] [--brokers hub,mosquitto] [--connections 1000] [--idle-connections 2000]
        [--hub-kind serve|listen] [--quick]

Before anything starts, a :class:`enos_lab.ca.CertificateAuthority` in a temporary directory
issues the server certificate (``server_credentials()``: SANs localhost, 127.0.0.1, ::1) and
``--device-certs`` device certificates (``issue(...)``, RSA 2048 unless ``--device-key ec``).
Both brokers serve the same files. The hub is by default the lab's TLS listener as users run
it, ``python -m enos_lab serve --anonymous --tls-port 0`` on a data directory holding a copy of
that CA (its context per handshake, CRL check, handshake failures reported); with
``--hub-kind listen`` it is ``_tls_hub.py``, an anonymous ``enos_lab.hub.Hub`` with
``listen_tcp(..., ssl=context)`` and one fixed context. Both hubs take the encrypted key with its
password; mosquitto an unencrypted copy of the same key (it can only ask for a password on a
terminal).

Workloads, each on a fresh broker process, for every TLS version of ``--tls`` (the client pins
it; both servers accept 1.2 and 1.3):

``server``
    handshakes per second with server authentication only: ``--connections`` connections,
    ``--connect-concurrency`` in progress, each TCP connect + TLS handshake + MQTT CONNECT ->
    CONNACK + DISCONNECT.
``mutual``
    the same with mutual TLS: the client presents a device certificate, the hub verifies it
    (``CERT_OPTIONAL`` with the lab's CA and its CRL), mosquitto too (``require_certificate
    true``, ``crlfile``).
``memory`` / ``memory-mutual``
    broker PSS growth over ``--idle-connections`` idle TLS connections (keep-alive 300 s),
    per connection, as ``mqtt_broker.py``'s idle-memory workload does for plain TCP.

Within a run the brokers take turns (alternating who goes first); the table shows medians over
runs and the median of the same-run ratios hub/mosquitto. mosquitto runs with
``set_tcp_nodelay true`` (the hub's sockets have TCP_NODELAY too): with Nagle on, its CONNACK
after a TLS 1.3 handshake waits for the client's delayed ACK of the session tickets
(``--mosquitto-nagle`` shows it). The hub process imports ``enos_lab`` as the interpreter finds
it (the editable install, or ``PYTHONPATH``). ``--quick`` is one short run, well under a minute.
See README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import shutil
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _loadgen as lg
import _tlsload as tl
from mqtt_broker import (
    HOST,
    BenchError,
    Broker,
    Child,
    Row,
    children,
    idle_memory,
    machine_busy_s,
    machine_lines,
    print_table,
    proc_cpu_s,
    start_hub,
    start_mosquitto,
)

from enos_lab._files import write_private
from enos_lab.ca import CertificateAuthority

WORKLOADS = ("server", "mutual", "memory", "memory-mutual")
BROKERS = ("hub", "mosquitto")
HUB_SCRIPT = Path(__file__).resolve().parent / "_tls_hub.py"
TLS_READY = re.compile(r"listening on mqtts://127\.0\.0\.1:(\d+)")
"""The TLS listener's line of ``enos-lab serve``; group 1 is its port."""
QUICK = {"runs": 1, "connections": 200, "idle_connections": 200, "settle": 0.3}
"""What ``--quick`` sets: one run with few connections (a check that everything works)."""


# --- certificates ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Credentials:
    """The files both brokers and the load generator use (all from one lab CA)."""

    chain: Path  # server certificate, then the CA's (PEM)
    key: Path  # server key, PKCS#8 PEM encrypted with the password in password_file
    password_file: Path
    plain_key: Path  # the same key unencrypted (0600), for mosquitto
    cafile: Path  # the lab's CA certificate
    crl: Path  # the CA's certificate revocation list (PEM)
    ca_dir: Path  # the CA's directory (a lab data directory's ca/)
    devices: list[tuple[str, str]]  # (certificate chain, key) of each device certificate


def make_credentials(directory: Path, device_certs: int, device_key: str) -> Credentials:
    """Create a lab CA in ``directory``/ca and issue the server's and the devices' files."""
    ca = CertificateAuthority(directory / "ca")
    server = ca.server_credentials()
    key = serialization.load_pem_private_key(server.private_key.read_bytes(), server.password)
    plain_key = directory / "server-plain.key"
    write_private(
        plain_key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    password_file = directory / "server-key.password"
    write_private(password_file, server.password)
    devices = []
    for i in range(device_certs):
        issued = ca.issue("benchTls", f"dev{i:03d}", key_type=device_key)
        cert, dev_key = issued.save(directory / "devices")
        assert dev_key is not None  # the CA generated the key pair
        devices.append((str(cert), str(dev_key)))
    return Credentials(
        chain=server.certificate_chain,
        key=server.private_key,
        password_file=password_file,
        plain_key=plain_key,
        cafile=server.ca_certificate,
        crl=ca.crl_path(),
        ca_dir=ca.directory,
        devices=devices,
    )


# --- brokers --------------------------------------------------------------------------------


@contextlib.contextmanager
def running(
    name: str, opts: argparse.Namespace, creds: Credentials, mutual: bool
) -> Iterator[Broker]:
    """A fresh broker serving TLS with ``creds`` (client certificates required with
    ``mutual``), always stopped afterwards."""
    with tempfile.TemporaryDirectory(prefix=f"bench-tls-{name}-") as tmp:
        if name == "mosquitto":
            tls = (
                f"certfile {creds.chain}",
                f"keyfile {creds.plain_key}",
                f"cafile {creds.cafile}",
                f"require_certificate {'true' if mutual else 'false'}",
                *([f"crlfile {creds.crl}"] if mutual else []),
                # As root, mosquitto would switch to the user "mosquitto", who cannot read
                # the CA's 0600 files in a 0700 directory: it stays the user that started it.
                *(["user root"] if os.geteuid() == 0 else []),
            )
            broker = start_mosquitto(
                opts.mosquitto, Path(tmp), not opts.mosquitto_nagle, listener=tls
            )
        elif opts.hub_kind == "serve":
            # a data directory of its own, with a copy of the CA (the same files)
            data = Path(tmp) / "data"
            shutil.copytree(creds.ca_dir, data / "ca")
            argv = [
                *shlex.split(opts.hub_cmd),
                *("serve", "--anonymous", "--host", HOST, "--port", "0", "--tls-port", "0"),
                *("--data-dir", str(data)),
            ]
            broker = start_hub(argv, Path(tmp), ready=TLS_READY)
        else:
            argv = [
                *shlex.split(opts.listen_cmd),
                *("--host", HOST, "--port", "0", "--chain", str(creds.chain)),
                *("--key", str(creds.key), "--password-file", str(creds.password_file)),
                *("--cafile", str(creds.cafile)),
                *(["--mutual", "--crl", str(creds.crl)] if mutual else []),
                *(["--ssl-buffer", str(opts.hub_ssl_buffer)] if opts.hub_ssl_buffer else []),
            ]
            broker = start_hub(argv, Path(tmp))
        try:
            yield broker
        finally:
            note = "" if broker.alive() else f"{name} died: {broker.log_tail()}"
            stop_note = broker.stop()
            if note or stop_note:
                print(f"  ! {note or stop_note}", flush=True)


# --- measurements ---------------------------------------------------------------------------


def connect_workload(creds: Credentials, version: str, mutual: bool) -> dict[str, object]:
    """The arguments of ``run_tls_connect`` common to both workloads."""
    return {
        "cafile": str(creds.cafile),
        "version": version,
        "certs": creds.devices if mutual else [],
    }


def bench_handshakes(
    broker: Broker, opts: argparse.Namespace, creds: Credentials, version: str, mutual: bool
) -> dict[str, float]:
    """``--connections`` TLS connections, each connect + handshake + CONNECT/CONNACK +
    DISCONNECT, ``--connect-concurrency`` in progress, split over ``--procs`` load-generator
    processes that start together. [conn/s]"""
    n = opts.connections
    deadline = 60.0 + n / 50
    procs = opts.procs
    with children() as kids:
        for k in range(procs):
            kids.append(
                Child(
                    tl.run_tls_connect,
                    host=HOST,
                    port=broker.port,
                    count=len(range(k, n, procs)),
                    concurrency=len(range(k, opts.connect_concurrency, procs)),
                    keepalive=60,
                    prefix=f"bench-tls-{k}",
                    hold=False,
                    start_timeout=30.0,
                    idle_timeout=opts.stall,
                    deadline_s=deadline,
                    **connect_workload(creds, version, mutual),
                )
            )
        for kid in kids:
            kid.wait("ready", 60)
        cpu0, busy0, wall0 = proc_cpu_s(broker.pid), machine_busy_s(), time.monotonic()
        for kid in kids:
            kid.send("go")
        results = [kid.wait("result", deadline + 60) for kid in kids]
        wall = time.monotonic() - wall0
        broker_cpu = proc_cpu_s(broker.pid) - cpu0
        busy = machine_busy_s() - busy0
    errors = [res["error"] for res in results if res["error"]]
    if errors:
        raise BenchError("; ".join(errors))
    accepted = sum(res["accepted"] for res in results)
    elapsed_ns = max(res["elapsed_ns"] for res in results)
    opts.negotiated.update(f"{broker.name} {res['tls']} {res['cipher']}" for res in results)
    return {
        "rate": accepted / (elapsed_ns / 1e9),
        "p50_ms": statistics.median(res["p50_ms"] for res in results),
        # per connection, including the broker's work on the DISCONNECT and close
        "cpu_ms": broker_cpu * 1000 / accepted,
        "broker_cpu": broker_cpu / wall,
        "gen_cpu": sum(res["cpu_ns"] for res in results) / elapsed_ns,
        # cores busy machine-wide: near 2.0 on 2 cores means everything competed
        "all_cpu": busy / wall,
    }


def bench_memory(
    broker: Broker, opts: argparse.Namespace, creds: Credentials, version: str, mutual: bool
) -> dict[str, float]:
    """Broker PSS growth over ``--idle-connections`` idle TLS connections. [KiB/connection]"""
    n = opts.idle_connections
    return idle_memory(
        broker,
        opts,
        n,
        tl.run_tls_connect,
        60.0 + n / 20,
        count=n,
        concurrency=64,
        keepalive=300,
        prefix="bench-tls-idle",
        **connect_workload(creds, version, mutual),
    )


Bench = Callable[[Broker, argparse.Namespace, Credentials, str, bool], dict[str, float]]
BENCHES: dict[str, tuple[Bench, bool]] = {
    "server": (bench_handshakes, False),
    "mutual": (bench_handshakes, True),
    "memory": (bench_memory, False),
    "memory-mutual": (bench_memory, True),
}


# --- report ---------------------------------------------------------------------------------


def make_rows(workloads: list[str], versions: list[str]) -> list[Row]:
    """The table layout: per workload and TLS version, its values. ``Row.workload`` holds
    ``"<workload> <version>"``."""
    rows: list[Row] = []
    for workload in workloads:
        for v in versions:
            w = f"{workload} {v}"
            if workload in ("server", "mutual"):
                what = "server auth" if workload == "server" else "mutual TLS"
                rows += [
                    Row(w, "rate", f"TLS {v} {what}, handshakes [conn/s]", ",.0f"),
                    Row(w, "cpu_ms", "  broker CPU per connection [ms]", ".3f"),
                    Row(w, "p50_ms", "  connect to CONNACK, p50 [ms]", ".2f"),
                    Row(w, "broker_cpu", "  broker CPU [cores]", ".2f"),
                    Row(w, "gen_cpu", "  load generator CPU [cores]", ".2f"),
                    Row(w, "all_cpu", "  machine busy [cores]", ".2f"),
                ]
            else:
                what = "server auth" if workload == "memory" else "mutual TLS"
                rows += [
                    Row(w, "pss_kb", f"TLS {v} {what}, idle PSS [KiB/conn]", ".2f"),
                    Row(w, "rss_kb", "  idle RSS [KiB/conn]", ".2f"),
                    Row(w, "base_rss_mb", "  broker RSS before [MiB]", ".1f"),
                ]
    return rows


def machine_info(opts: argparse.Namespace, creds: Credentials) -> None:
    """Print what the numbers were measured on and the load."""
    print("\n".join(machine_lines(opts.mosquitto)))
    if opts.hub_kind == "serve":
        print(f"hub     : {opts.hub_cmd} serve --anonymous --tls-port 0 (the lab's CA)")
    else:
        buffer = f", TLS read buffer {opts.hub_ssl_buffer} B" if opts.hub_ssl_buffer else ""
        print(f"hub     : {opts.listen_cmd} (anonymous Hub, listen_tcp(ssl=SSLContext){buffer})")
    print(f"tls     : {ssl.OPENSSL_VERSION} in the load generator and the hub's Python")
    print(
        f"load    : {opts.connections} connections ({opts.connect_concurrency} in progress,"
        f" {opts.procs} process(es));"
        f" {opts.idle_connections} idle connections; TLS {', '.join(opts.tls)};"
        f" {len(creds.devices)} device certificate(s), {opts.device_key.upper()};"
        f" server key RSA 2048; mosquitto Nagle {'on' if opts.mosquitto_nagle else 'off'}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5, help="runs per broker and workload")
    p.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated workloads")
    p.add_argument("--tls", default="1.2,1.3", help="comma-separated TLS versions")
    p.add_argument("--brokers", default=",".join(BROKERS), help="comma-separated brokers")
    p.add_argument("--connections", type=int, default=1000, help="connections per handshake run")
    p.add_argument("--connect-concurrency", type=int, default=8, help="connections in progress")
    p.add_argument("--procs", type=int, default=1, help="load-generator processes (handshakes)")
    p.add_argument("--idle-connections", type=int, default=2000)
    p.add_argument("--device-certs", type=int, default=8, help="device certificates to cycle")
    p.add_argument("--device-key", choices=("rsa", "ec"), default="rsa")
    p.add_argument("--stall", type=float, default=10.0, help="abort after no progress [s]")
    p.add_argument("--settle", type=float, default=1.0, help="wait before memory samples [s]")
    p.add_argument("--quick", action="store_true", help="one short run (well under a minute)")
    p.add_argument("--mosquitto", default="/usr/sbin/mosquitto", help="mosquitto binary")
    p.add_argument(
        "--mosquitto-nagle",
        action="store_true",
        help="leave mosquitto's Nagle on (its default; here set_tcp_nodelay true by default)",
    )
    p.add_argument(
        "--hub-kind",
        choices=("serve", "listen"),
        default="serve",
        help="the lab's TLS listener (enos-lab serve --anonymous --tls-port 0) or a"
        " bare Hub.listen_tcp(ssl=SSLContext) (_tls_hub.py)",
    )
    p.add_argument(
        "--hub-ssl-buffer",
        type=int,
        default=0,
        help="experiment with --hub-kind listen: asyncio's TLS read buffer per connection"
        " (0: asyncio's 256 KiB) [bytes]",
    )
    p.add_argument(
        "--hub-cmd",
        default=f"{shlex.quote(sys.executable)} -m enos_lab",
        help="command prefix that accepts 'serve --anonymous --tls-port 0 ...' (--hub-kind serve)",
    )
    p.add_argument(
        "--listen-cmd",
        default=f"{shlex.quote(sys.executable)} {shlex.quote(str(HUB_SCRIPT))}",
        help="command that accepts _tls_hub.py's options (--hub-kind listen)",
    )
    opts = p.parse_args(argv)
    if opts.quick:
        for name, value in QUICK.items():
            setattr(opts, name, value)
    opts.only = [w.strip() for w in opts.only.split(",") if w.strip()]
    opts.tls = [v.strip() for v in opts.tls.split(",") if v.strip()]
    opts.brokers = [b.strip() for b in opts.brokers.split(",") if b.strip()]
    bad = (
        [w for w in opts.only if w not in WORKLOADS]
        + [v for v in opts.tls if v not in tl.TLS_VERSIONS]
        + [b for b in opts.brokers if b not in BROKERS]
    )
    if opts.hub_ssl_buffer and opts.hub_kind != "listen":
        p.error("--hub-ssl-buffer needs --hub-kind listen")
    if (
        bad
        or opts.runs < 1
        or opts.device_certs < 1
        or not 1 <= opts.procs <= opts.connect_concurrency
    ):
        p.error(f"bad arguments: {bad or 'runs/device-certs'}")
    opts.negotiated = set()
    return opts


def main(argv: list[str] | None = None) -> int:
    """Run every selected workload and TLS version on every selected broker, ``--runs``
    times; print the table."""
    opts = parse_args(argv)
    lg.self_check()
    lg.raise_fd_limit(max(opts.idle_connections, opts.connections) * 2 + 1024)
    rows = make_rows(opts.only, opts.tls)
    for row in rows:
        row.values = {b: [] for b in opts.brokers}
    failures = 0
    with tempfile.TemporaryDirectory(prefix="bench-tls-certs-") as tmp:
        creds = make_credentials(Path(tmp), opts.device_certs, opts.device_key)
        machine_info(opts, creds)
        for run in range(opts.runs):
            order = opts.brokers if run % 2 == 0 else opts.brokers[::-1]
            for workload in opts.only:
                bench, mutual = BENCHES[workload]
                for version in opts.tls:
                    for name in order:
                        t0 = time.monotonic()
                        try:
                            with running(name, opts, creds, mutual) as broker:
                                result = bench(broker, opts, creds, version, mutual)
                            detail = ", ".join(f"{k}={v:,.3f}" for k, v in result.items())
                        except (BenchError, lg.LoadError) as exc:
                            result = None
                            failures += 1
                            detail = f"FAILED: {exc}"
                        took = time.monotonic() - t0
                        label = f"{workload} {version}"
                        print(f"run {run + 1} {label:<18}{name:<10}{took:6.1f} s  {detail}")
                        for row in rows:
                            if row.workload == label:
                                row.values[name].append(None if result is None else result[row.key])
    print(f"\nnegotiated: {'; '.join(sorted(opts.negotiated))}\n")
    print_table(rows, opts.brokers, opts.runs)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
