"""Errors of the key service: one small closed hierarchy rooted at `KeyServiceError`.

Messages never contain key bytes; they name keys by their identifiers only.
"""

from __future__ import annotations


class KeyServiceError(Exception):
    """Base of every error raised by `onecard.keys`."""


class InvalidKeyLength(KeyServiceError, ValueError):
    """A key has a length the algorithm does not accept."""


class InvalidInput(KeyServiceError, ValueError):
    """A non-key argument (factor, counter, block, IV, component) is malformed."""


class KeyNotFound(KeyServiceError, LookupError):
    """No key is stored under the requested identifier (tenant, application, name, version)."""


class KeyExists(KeyServiceError):
    """A key is already stored under the identifier; keys are never silently overwritten."""


class KeyStoreTampered(KeyServiceError):
    """The key store file failed authentication (wrong KEK, corruption or tampering)."""


class KeyStoreError(KeyServiceError):
    """The key store file or the key-encryption key could not be read or written."""


class KcvMismatch(KeyServiceError):
    """A key component or assembled key does not match the check value it came with."""


class ApplicationNotOwned(KeyServiceError, PermissionError):
    """The calling module asked for a card application or M1 sector it does not own."""


class LayoutError(KeyServiceError):
    """A card layout plan is inconsistent (e.g. two modules claim one application)."""


class OperationNotPermitted(KeyServiceError):
    """The key's usage or export policy forbids the requested HSM operation."""


class MacInvalid(KeyServiceError):
    """A MAC presented by a card (e.g. load MAC1) does not verify; nothing was produced."""
