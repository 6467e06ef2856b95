"""The ``enos-lab`` command.

``enos-lab serve [--host H] [--port P] [--data-dir D] [--anonymous]`` runs the hub until Ctrl-C or
SIGTERM. It prints one line, ``enos-lab hub listening on mqtt://H:P``, once the listener accepts
connections (scripts may wait for that line; with ``--port 0`` it carries the real port).
"""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from importlib.metadata import version
from types import FrameType

from .lab import DEFAULT_PORT, Lab

__all__ = ["main"]

_ANONYMOUS_WARNING = """\
WARNING: --anonymous: this hub accepts EVERY MQTT client without authentication and lets it
publish and subscribe to ANY topic. It is a plain MQTT broker, not an EnOS IoT Hub.
Use it only for generic MQTT tooling and conformance tests, on a trusted machine."""


# Collector settings of the serve process (see _tune_gc).
GC_THRESHOLDS = (10_000, 10, 10)


def _tune_gc() -> None:
    """Set up the garbage collector of a serving process.

    Nearly everything a running hub allocates per message (packets, messages, futures) is freed
    by reference counting; the collector is only needed for the rare cycle. With Python's
    default thresholds it runs after every 700 net allocations - a QoS 1 window of in-flight
    messages is more than that - promotes those messages, and every so often scans every object
    alive, imported modules included: a hub forwarding QoS 1 messages spent about a tenth of
    its time there. So the objects created at startup are frozen (never scanned again) and young
    objects are collected after ``GC_THRESHOLDS[0]`` net allocations. Process-wide, hence done
    only by ``enos-lab serve``, never by the library.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="enos-lab",
        description="enos_lab: a local laboratory modelled on the EnOS IoT Hub.",
    )
    parser.add_argument("--version", action="version", version=f"enos-lab {version('enos_lab')}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the MQTT hub until Ctrl-C / SIGTERM")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"TCP port; 0 picks a free one (default {DEFAULT_PORT})",
    )
    serve.add_argument(
        "--data-dir", default=None, help="directory to keep data in (default: temporary)"
    )
    serve.add_argument(
        "--anonymous",
        action="store_true",
        help="INSECURE: accept every client without authentication (plain MQTT broker)",
    )
    serve.add_argument(
        "--log-level", default="WARNING", help="logging level (DEBUG, INFO, WARNING, ...)"
    )
    return parser


def _serve(args: argparse.Namespace) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    if args.anonymous:
        sys.stderr.write(_ANONYMOUS_WARNING + "\n")
    try:
        with Lab(args.data_dir, host=args.host, port=args.port, anonymous=args.anonymous) as lab:
            _tune_gc()
            sys.stdout.write(f"enos-lab hub listening on {lab.url}\n")
            if not args.anonymous:
                sys.stdout.write(
                    "EnOS authentication is on: only registered devices can connect. "
                    "Register products and devices in the registry of this data directory "
                    "with the Python API (enos_lab.Lab: create_product, register_device); "
                    "use --anonymous for a plain MQTT broker.\n"
                )
            sys.stdout.write("Press Ctrl-C to stop.\n")
            sys.stdout.flush()
            while not stop.wait(3600):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    sys.stdout.write("enos-lab hub stopped\n")
    sys.stdout.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``enos-lab`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "serve":
        return _serve(args)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
