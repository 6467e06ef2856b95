"""Who a login comes from: the source address and the keys of its user name.

The login throttle counts failed logins per source address and identity; these helpers read
both from a CONNECT.
"""

from __future__ import annotations

__all__ = ["login_source", "username_keys"]


def login_source(peer: str) -> str:
    """The address part of a connection's ``peer`` (``"host:port"``; IPv6 as ``"::1:port"``
    or ``"[::1]:port"``); a peer without a port (``"memory"``) is returned as it is."""
    host, colon, port = peer.rpartition(":")
    if not colon or not port.isdigit():
        return peer
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1]
    return host


def username_keys(username: str | None) -> tuple[str | None, str | None]:
    """``(product_key, device_key)`` from an EnOS user name ``deviceKey&productKey``;
    ``(None, None)`` when there is none."""
    if not username or "&" not in username:
        return None, None
    device_key, _, product_key = username.partition("&")
    return product_key, device_key
