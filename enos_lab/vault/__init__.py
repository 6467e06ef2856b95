"""Secrets at rest: the lab key, sealed values and secrets derived from the key.

The registry keeps device and product secrets sealed (AES-256-GCM, bound to their row) under
the lab key, which lives in a file of its own (``lab.key`` in the data directory unless
``Lab(key_file=...)``); the CA's key-encryption passphrase is derived from the same key. See
:class:`LabKey` and the theory of operation in :mod:`enos_lab.vault._key`.
"""

from ._key import KEY_BYTES, KEY_FILE, SEALED_PREFIX, LabKey, context, is_sealed

__all__ = ["KEY_BYTES", "KEY_FILE", "SEALED_PREFIX", "LabKey", "context", "is_sealed"]
