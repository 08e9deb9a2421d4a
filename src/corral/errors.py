"""Domain errors shared by every part of corral.

Domain code raises these; exactly one module per HTTP surface maps them to
status codes (``corral.server.api.errors``). The tree::

    CorralError                 code: a stable, machine-readable string
    ├── InvalidInputError       the request is well-formed but wrong   -> 422
    │   └── InvalidModelFile    a model file that cannot be read      -> 422
    ├── NotFoundError           the named thing does not exist        -> 404
    ├── ConflictError           it clashes with existing state        -> 409
    ├── AuthenticationError     no credential, or not a valid one     -> 401
    ├── PermissionDeniedError   valid credential, not allowed         -> 403
    └── UnavailableError        a worker or engine it needs did not answer -> 502
"""

from __future__ import annotations


class CorralError(Exception):
    """Base of every error corral raises on purpose."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidInputError(CorralError):
    code = "invalid_input"


class InvalidModelFile(InvalidInputError):
    """A model file (GGUF, safetensors, config) is malformed; the message says
    what is wrong and where."""

    code = "invalid_model_file"


class NotFoundError(CorralError):
    code = "not_found"


class ConflictError(CorralError):
    code = "conflict"


class AuthenticationError(CorralError):
    code = "unauthenticated"


class PermissionDeniedError(CorralError):
    code = "forbidden"


class UnavailableError(CorralError):
    code = "unavailable"
