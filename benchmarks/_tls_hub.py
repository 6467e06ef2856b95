"""The hub side of the TLS listener benchmark: an anonymous hub serving MQTT over TLS.

Usage (started by ``tls_listener.py``; stopped with SIGTERM)::

    python benchmarks/_tls_hub.py --chain server.crt --key server.key --password-file pw
        --cafile ca.crt [--mutual [--crl crl.pem]] [--host 127.0.0.1] [--port 0]

An anonymous :class:`enos_lab.hub.Hub` (``HubConfig(anonymous=True, connack_delay=0.0)``, as
``enos-lab serve --anonymous`` configures it) on the lab's event loop, listening with
``hub.listen_tcp(host, port, ssl=context)``. The context is a TLS server context with TLS 1.2
as the minimum, the server's certificate chain and its encrypted key (the password read from
``--password-file``); with ``--mutual`` it asks every client for a certificate and verifies it
against ``--cafile`` and the CRL of ``--crl`` (``CERT_OPTIONAL``: a client without one is still
served, as by the lab's listener, which leaves the decision to the login). Unlike the lab's
listener (``enos-lab serve --tls-port``), the context is fixed for the listener's life. After
start-up the collector is tuned as ``enos-lab serve`` does. Prints ``tls hub listening on
mqtts://HOST:PORT`` once the listener accepts connections, and runs until SIGTERM or SIGINT.
``--ssl-buffer`` is an experiment: it sets the size of the read buffer asyncio's TLS protocol
allocates per connection.
"""

from __future__ import annotations

import argparse
import asyncio
import asyncio.sslproto
import signal
import ssl
import sys
from pathlib import Path

from enos_lab.cli import _tune_gc
from enos_lab.hub import Hub, HubConfig
from enos_lab.hub._tcp import new_event_loop


def server_context(
    chain: str, key: str, password: bytes, cafile: str, *, mutual: bool, crl: str | None = None
) -> ssl.SSLContext:
    """The listener's TLS context: TLS 1.2+, the server chain and key; with ``mutual`` client
    certificates are requested and verified against ``cafile`` (and the leaf against the CRL
    file ``crl`` when given)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(chain, key, password)
    if mutual:
        context.load_verify_locations(cafile)
        context.verify_mode = ssl.CERT_OPTIONAL
        if crl:
            context.load_verify_locations(crl)
            context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return context


async def serve(opts: argparse.Namespace) -> None:
    """Run the hub until SIGTERM or SIGINT."""
    password = Path(opts.password_file).read_bytes().strip()
    context = server_context(
        opts.chain, opts.key, password, opts.cafile, mutual=opts.mutual, crl=opts.crl
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Hub(HubConfig(anonymous=True, connack_delay=0.0)) as hub:
        listener = await hub.listen_tcp(opts.host, opts.port, ssl=context)
        _tune_gc()
        sys.stdout.write(f"tls hub listening on mqtts://{opts.host}:{listener.port}\n")
        sys.stdout.flush()
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--chain", required=True, help="server certificate chain (PEM)")
    p.add_argument("--key", required=True, help="server private key (PEM, encrypted)")
    p.add_argument("--password-file", required=True, help="file holding the key's password")
    p.add_argument("--cafile", required=True, help="CA certificate for client certificates")
    p.add_argument("--mutual", action="store_true", help="request client certificates")
    p.add_argument("--crl", help="with --mutual: check client certificates against this CRL")
    p.add_argument(
        "--ssl-buffer",
        type=int,
        default=0,
        help="experiment: asyncio's TLS read buffer per connection (0: its own) [bytes]",
    )
    opts = p.parse_args(argv)
    if opts.ssl_buffer:
        # Every asyncio TLS connection allocates a read buffer of SSLProtocol.max_size
        # (256 KiB, zero-filled); an experiment to see what a smaller one saves.
        asyncio.sslproto.SSLProtocol.max_size = opts.ssl_buffer
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(serve(opts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
