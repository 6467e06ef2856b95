"""The ``enos-lab`` command.

``enos-lab serve [--host H] [--port P] [--tls-port T [--tls-host N ...] [--no-plain]]
[--data-dir D] [--key-file K] [--anonymous]`` runs the hub until Ctrl-C or SIGTERM. It prints a line
``enos-lab hub listening on mqtt://H:P`` (and ``... on mqtts://H:T`` for the TLS listener) once
the listeners accept connections (scripts may wait for those lines; with port 0 they carry the
real port). With ``--tls-port`` the TLS listener's server certificate comes from the lab's CA in
the data directory (``ca/ca.crt`` is the CA file devices verify it with). ``--key-file`` keeps
the lab key (which seals the registry's secrets and the CA's keys) outside the data directory
(``Lab(key_file=...)``); a key file that cannot be used, or is not the data's key, ends the
command with status 1 and the reason on stderr.

``enos-lab tutorials [--dir D] [--print-command] [JUPYTERLAB OPTIONS]`` opens the tutorial
notebooks in JupyterLab (the ``notebooks`` extra installs it). Which folder it opens:

- ``--dir D``: ``D``; the shipped tutorials it lacks are copied into it first;
- otherwise, in a source checkout (an editable install), the repository's ``notebooks/``, in
  place;
- otherwise (an installed wheel, which carries the tutorials inside the package)
  ``~/enos-lab-tutorials``, with the shipped tutorials it lacks copied into it.

A notebook already in the folder is never overwritten, so your edits survive the next run (delete
a copy to get the shipped one back). The command then replaces itself with
``python -m jupyterlab --ServerApp.root_dir=<folder>``, adding ``--allow-root`` when it runs as
root (containers, Codespaces: JupyterLab refuses to start as root otherwise) and passing every
other option on (``--no-browser``, ``--ServerApp.port=8888`` ...). ``--print-command`` prints that
command line instead of running it, and copies nothing.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import logging
import os
import shlex
import shutil
import signal
import sys
import threading
import tomllib
from collections.abc import Sequence
from importlib import resources
from importlib.metadata import version
from pathlib import Path
from types import FrameType

from .errors import NotFound, SecretsError
from .lab import DEFAULT_PORT, DEFAULT_TLS_PORT, Lab

__all__ = [
    "TUTORIALS_HOME",
    "copy_tutorials",
    "jupyterlab_command",
    "main",
    "shipped_tutorials",
    "tutorials_folder",
]

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


TUTORIALS_HOME = "enos-lab-tutorials"
"""Folder in the user's home that ``enos-lab tutorials`` fills when there is no source checkout."""

_PACKAGED_NOTEBOOKS = "_notebooks"
"""Folder inside the installed package where wheels carry the tutorials (see pyproject.toml)."""


def _checkout_notebooks() -> Path | None:
    """The repository's ``notebooks/`` when this package runs from a source checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    folder = root / "notebooks"
    if project.get("project", {}).get("name") == "enos_lab" and folder.is_dir():
        return folder
    return None


def shipped_tutorials() -> Path:
    """The folder of the shipped tutorial notebooks: inside the installed package (wheels), or
    the source checkout's ``notebooks/``. :class:`~enos_lab.errors.NotFound` if neither has
    any."""
    packaged = Path(str(resources.files(__package__ or "enos_lab").joinpath(_PACKAGED_NOTEBOOKS)))
    checkout = _checkout_notebooks()
    for folder in (packaged, checkout):
        if folder is not None and any(folder.glob("*.ipynb")):
            return folder
    raise NotFound(
        f"no tutorial notebooks found (looked in {packaged} and beside the package); "
        "reinstall enos_lab"
    )


def tutorials_folder(requested: str | os.PathLike[str] | None = None) -> Path:
    """The folder ``enos-lab tutorials`` opens: ``requested``, else a source checkout's
    ``notebooks/``, else ``~/enos-lab-tutorials`` (see the module docstring)."""
    if requested is not None:
        return Path(requested).expanduser().resolve()
    checkout = _checkout_notebooks()
    if checkout is not None:
        return checkout
    return Path.home() / TUTORIALS_HOME


def copy_tutorials(target: Path, source: Path | None = None) -> list[Path]:
    """Copy the shipped notebooks that ``target`` lacks into it (creating it); returns the new
    files. Notebooks already there are left as they are; copying a folder onto itself does
    nothing."""
    source = shipped_tutorials() if source is None else source
    target.mkdir(parents=True, exist_ok=True)
    if source.resolve() == target.resolve():
        return []
    copied = []
    for notebook in sorted(source.glob("*.ipynb")):
        destination = target / notebook.name
        if not destination.exists():
            shutil.copyfile(notebook, destination)
            copied.append(destination)
    return copied


def _running_as_root() -> bool:
    geteuid = getattr(os, "geteuid", None)  # not on Windows
    return geteuid is not None and geteuid() == 0


def jupyterlab_command(
    folder: Path, options: Sequence[str] = (), *, as_root: bool | None = None
) -> list[str]:
    """The command line that opens JupyterLab on ``folder`` with this Python, ``options``
    passed on; ``--allow-root`` is added when running as root (``as_root`` None: find out)."""
    command = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={folder}"]
    root = _running_as_root() if as_root is None else as_root
    if root and not any(o.startswith(("--allow-root", "--ServerApp.allow_root")) for o in options):
        command.append("--allow-root")
    return [*command, *options]


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
        "--tls-port",
        type=int,
        default=None,
        help=f"also listen over TLS on this port (EnOS: {DEFAULT_TLS_PORT}; 0 picks a free one)",
    )
    serve.add_argument(
        "--tls-host",
        action="append",
        default=[],
        help="a host name or address the TLS server certificate names (repeatable)",
    )
    serve.add_argument(
        "--no-plain",
        action="store_true",
        help="no plain TCP listener: devices connect over TLS only (needs --tls-port)",
    )
    serve.add_argument(
        "--data-dir", default=None, help="directory to keep data in (default: temporary)"
    )
    serve.add_argument(
        "--key-file",
        default=None,
        help="the lab key file that seals the registry's secrets (default: DATA_DIR/lab.key)",
    )
    serve.add_argument(
        "--anonymous",
        action="store_true",
        help="INSECURE: accept every client without authentication (plain MQTT broker)",
    )
    serve.add_argument(
        "--log-level", default="WARNING", help="logging level (DEBUG, INFO, WARNING, ...)"
    )
    tutorials = commands.add_parser(
        "tutorials",
        help="open the tutorial notebooks in JupyterLab (works as root too)",
        description=(
            "Open the tutorial notebooks in JupyterLab. Options it does not know are passed on "
            "to JupyterLab (e.g. --no-browser, --ServerApp.port=8888)."
        ),
        allow_abbrev=False,
    )
    tutorials.add_argument(
        "--dir",
        default=None,
        help=(
            "folder to open; the shipped tutorials it lacks are copied into it (default: a "
            f"source checkout's notebooks/, else ~/{TUTORIALS_HOME})"
        ),
    )
    tutorials.add_argument(
        "--print-command",
        action="store_true",
        help="print the JupyterLab command line instead of running it (copies nothing)",
    )
    tutorials.set_defaults(log_level="WARNING")
    return parser


def _serve(args: argparse.Namespace) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    if args.no_plain and args.tls_port is None:
        sys.stderr.write("enos-lab serve: --no-plain needs --tls-port\n")
        return 2
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    if args.anonymous:
        sys.stderr.write(_ANONYMOUS_WARNING + "\n")
    try:
        lab = Lab(
            args.data_dir,
            host=args.host,
            port=None if args.no_plain else args.port,
            tls_port=args.tls_port,
            tls_hosts=args.tls_host,
            anonymous=args.anonymous,
            key_file=args.key_file,
        )
        try:
            lab.start()
        except SecretsError as exc:
            sys.stderr.write(f"enos-lab serve: {exc}\n")
            return 1
        with lab:
            _tune_gc()
            if not args.no_plain:
                sys.stdout.write(f"enos-lab hub listening on {lab.url}\n")
            if args.tls_port is not None:
                sys.stdout.write(f"enos-lab hub listening on {lab.tls_url}\n")
                sys.stdout.write(f"TLS: devices verify the hub with {lab.ca.ca_certificate_path}\n")
            if not args.anonymous:
                sys.stdout.write(
                    "EnOS authentication is on: only registered devices can connect. "
                    "Register products and devices in the registry of this data directory "
                    "with the Python API (enos_lab.Lab: create_product, register_device); "
                    "use --anonymous for a plain MQTT broker.\n"
                )
            sys.stdout.write("Press Ctrl-C to stop.\n")
            sys.stdout.flush()
            # short waits: a signal the kernel hands to another thread (as under valgrind)
            # sets Python's flag without waking this one; its handler runs at the next wake
            while not stop.wait(1.0):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    sys.stdout.write("enos-lab hub stopped\n")
    sys.stdout.flush()
    return 0


def _tutorials(args: argparse.Namespace, options: list[str]) -> int:
    folder = tutorials_folder(args.dir)
    command = jupyterlab_command(folder, options)
    if args.print_command:
        sys.stdout.write(shlex.join(command) + "\n")
        return 0
    if importlib.util.find_spec("jupyterlab") is None:
        sys.stderr.write(
            "enos-lab tutorials: JupyterLab is not installed; install the notebooks extra: "
            "python -m pip install 'enos_lab[notebooks]'\n"
        )
        return 1
    try:
        copied = copy_tutorials(folder)
    except (NotFound, OSError) as exc:
        sys.stderr.write(f"enos-lab tutorials: {exc}\n")
        return 1
    if copied:
        sys.stdout.write(f"copied {len(copied)} tutorial notebook(s) to {folder}\n")
    sys.stdout.write(f"opening {folder} in JupyterLab\n")
    sys.stdout.flush()
    sys.stderr.flush()
    _exec(command)
    return 0  # reached only when _exec is replaced (tests)


def _exec(command: list[str]) -> None:
    """Replace this process with ``command``: JupyterLab gets Ctrl-C and signals directly."""
    os.execv(command[0], command)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``enos-lab`` console script; returns the exit status."""
    parser = _parser()
    args, options = parser.parse_known_args(argv)
    if options and args.command != "tutorials":
        parser.error(f"unrecognized arguments: {' '.join(options)}")
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "serve":
        return _serve(args)
    if args.command == "tutorials":
        return _tutorials(args, [o for o in options if o != "--"])
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
