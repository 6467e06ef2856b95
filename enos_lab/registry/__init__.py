"""The device registry: products, devices, credentials, lifecycle, topology and login decisions.

Synchronous and deterministic (SQLite, an injectable clock and random source); the hub and the
lab call it. See :class:`Registry`, :func:`authenticate` (logins),
:func:`authenticate_sub_device` (sub-device signatures sent by gateways) and
:class:`DeviceLookup` (cached reads for code that runs per point).
"""

from ._auth import (
    AuthDecision,
    CertificateChecker,
    LoginBlock,
    LoginThrottle,
    SubDeviceDecision,
    authenticate,
    authenticate_sub_device,
)
from ._lookup import MAX_LOOKUPS, DeviceLookup
from ._records import DataFormat, Device, DeviceState, NodeType, Product, TopicPermission
from ._registry import BulkResult, Registry
from ._sealing import sealed_with

__all__ = [
    "MAX_LOOKUPS",
    "AuthDecision",
    "BulkResult",
    "CertificateChecker",
    "DataFormat",
    "Device",
    "DeviceLookup",
    "DeviceState",
    "LoginBlock",
    "LoginThrottle",
    "NodeType",
    "Product",
    "Registry",
    "SubDeviceDecision",
    "TopicPermission",
    "authenticate",
    "authenticate_sub_device",
    "sealed_with",
]
