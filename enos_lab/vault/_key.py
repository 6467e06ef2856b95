"""The lab key: a 256-bit key in a file of its own, sealing and key derivation.

Theory of operation
-------------------
A lab keeps one random 256-bit key (:class:`LabKey`) in a file of its own, by default
``lab.key`` in the data directory (:data:`KEY_FILE`), created 0600 with
:func:`enos_lab._files.write_private` and never stored in a database: whoever copies the
registry file alone gets sealed values only. ``Lab(key_file=...)`` keeps it elsewhere (another
disk, a secrets mount), so that a copy of the data directory alone opens nothing.

Short texts (device and product secrets) are sealed with AES-256-GCM under a key derived from
the lab key (HKDF-SHA256, purpose ``"enos_lab seal v1"``), a random 96-bit nonce per value,
and associated data naming the place the value belongs to (:func:`context`: column name and
row keys, e.g. ``b"device_secret\\0<product_key>\\0<device_key>"``). A sealed value copied into
another row, or another column, does not open there (:class:`~enos_lab.errors.SealBroken`).
The sealed form is ASCII, ``v1:`` + base64url (no padding) of nonce + ciphertext + tag: 64
characters for a 20-character secret.

Other secrets come from the lab key by :meth:`LabKey.derive` with a purpose label (the CA's
key-encryption passphrase, for one), so that no second key file is needed; a key's
:attr:`~LabKey.fingerprint` (derived too, 64 bits) lets a database say which key sealed it
without revealing anything of the key.
"""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .._files import private_dir, write_private
from ..errors import InvalidArgument, LabKeyError, SealBroken

__all__ = ["KEY_BYTES", "KEY_FILE", "SEALED_PREFIX", "LabKey", "context", "is_sealed"]

KEY_FILE = "lab.key"
"""File name of the lab key inside the data directory (unless ``Lab(key_file=...)``)."""
KEY_BYTES = 32
"""Length of the lab key and of the keys derived from it: 256 bits. [B]"""
SEALED_PREFIX = "v1:"
"""What every sealed value starts with (the format's version)."""

_NONCE_BYTES = 12  # 96 bits: GCM's recommended nonce length (NIST SP 800-38D 8.2)
_PREFIX_LENGTH = len(SEALED_PREFIX)
_SEAL_PURPOSE = "enos_lab seal v1"
_FINGERPRINT_PURPOSE = "enos_lab key fingerprint"
_POSIX = os.name == "posix"


def context(column: str, *keys: str) -> bytes:
    """The associated data that binds a sealed value to its place: the column name and the
    row's keys, NUL-separated (keys never contain NUL)."""
    return "\0".join((column, *keys)).encode("utf-8")


def is_sealed(value: str) -> bool:
    """Whether ``value`` has the sealed form (``v1:`` ...)."""
    return value.startswith(SEALED_PREFIX)


class LabKey:
    """A lab's 256-bit key: seals and opens short texts, derives other secrets.

    Make one with :meth:`load` (a key file, created when missing) or :meth:`ephemeral` (in
    memory only, for a throw-away registry). ``path`` is the key file, if any.
    """

    __slots__ = ("_aead", "_key", "fingerprint", "path")

    def __init__(self, key: bytes, *, path: Path | None = None) -> None:
        if len(key) != KEY_BYTES:
            raise InvalidArgument(f"a lab key has {KEY_BYTES} bytes, got {len(key)}")
        self._key = key
        self.path = path
        """The key file (``None`` for a key that lives in memory only)."""
        self._aead = AESGCM(self.derive(_SEAL_PURPOSE))
        self.fingerprint = self.derive(_FINGERPRINT_PURPOSE, 8).hex()
        """Sixteen hex digits that tell keys apart (derived: they reveal nothing of the key)."""

    @classmethod
    def load(cls, path: str | Path, *, create: bool = True) -> LabKey:
        """The key in the file ``path``; a new random key written there (0600, its missing
        parent directories 0700) if the file does not exist and ``create`` is true.

        Raises :class:`~enos_lab.errors.LabKeyError` for a missing file when ``create`` is
        false (secrets were sealed under a key that is gone: a new one would not open them),
        a file that is not exactly :data:`KEY_BYTES` bytes, or (POSIX) one that group or
        others may read or write.
        """
        path = Path(path)
        if not path.exists():
            if not create:
                raise LabKeyError(
                    f"the lab key file {path} is missing, but the lab's secrets were sealed "
                    "under a lab key: put the lab's key file back (or pass it with "
                    "key_file=); a new key would not open them"
                )
            private_dir(path.parent)
            write_private(path, os.urandom(KEY_BYTES))
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
            data = path.read_bytes()
        except OSError as exc:
            raise LabKeyError(f"cannot read the lab key file {path}: {exc}") from exc
        if _POSIX and mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise LabKeyError(
                f"the lab key file {path} has mode {oct(mode)}: other users of this machine may "
                f"read the key that opens the lab's secrets. Make it private (chmod 600 {path}) "
                "and, if others could read it, treat the secrets as exposed: rotate them"
            )
        if len(data) != KEY_BYTES:
            raise LabKeyError(
                f"the lab key file {path} has {len(data)} bytes, a lab key has {KEY_BYTES}: it "
                "is not a lab key (or was damaged). Restore it from a backup; a lab whose key "
                "is lost cannot open its secrets"
            )
        return cls(data, path=path)

    @classmethod
    def ephemeral(cls) -> LabKey:
        """A random key kept in memory only (a throw-away registry's)."""
        return cls(os.urandom(KEY_BYTES))

    def derive(self, purpose: str, length: int = KEY_BYTES) -> bytes:
        """A secret of ``length`` bytes for ``purpose`` (HKDF-SHA256, RFC 5869, with the
        purpose as ``info``): the same key and purpose always give the same bytes, different
        purposes unrelated ones. [B]"""
        hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=purpose.encode())
        return hkdf.derive(self._key)

    def passphrase(self, purpose: str) -> bytes:
        """:meth:`derive` for ``purpose`` as ASCII (base64url of 256 bits, 43 characters): a
        key-encryption passphrase for PEM files, which ``ssl`` and OpenSSL read as text."""
        return base64.urlsafe_b64encode(self.derive(purpose)).rstrip(b"=")

    def seal(self, text: str, where: bytes) -> str:
        """``text`` sealed for the place ``where`` (see :func:`context`): ``v1:`` + base64url."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, text.encode("utf-8"), where)
        return SEALED_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode("ascii").rstrip("=")

    def open(self, token: str, where: bytes) -> str:
        """The text sealed in ``token`` for the place ``where``.

        Raises :class:`~enos_lab.errors.SealBroken` when it does not open: sealed for another
        place, altered, or under another key (a registry checks its key first, so that a
        replaced key file is reported as such, :class:`~enos_lab.errors.WrongLabKey`).
        """
        # the login path runs this once per login: the checks of a bad value come after
        try:
            if not token.startswith(SEALED_PREFIX):
                raise ValueError(f"not a sealed value (no {SEALED_PREFIX!r})")
            # excess padding is ignored (non-strict base64), so "==" suits every length
            raw = base64.urlsafe_b64decode(token[_PREFIX_LENGTH:] + "==")
            return self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], where).decode()
        except (InvalidTag, ValueError) as exc:  # binascii.Error, UnicodeDecodeError: ValueErrors
            why = "its tag does not match" if isinstance(exc, InvalidTag) else str(exc)
            raise SealBroken(
                f"{_place(where)}: the sealed value does not open here (copied from another "
                f"row or column, or altered: {why})"
            ) from exc

    def __repr__(self) -> str:
        where = f" {self.path}" if self.path is not None else " (in memory)"
        return f"<LabKey {self.fingerprint}{where}>"


def _place(where: bytes) -> str:
    """A sealed value's place for messages: ``device_secret of pk/dk``."""
    column, *keys = where.decode("utf-8", "replace").split("\0")
    return f"{column} of {'/'.join(keys)}" if keys else column
