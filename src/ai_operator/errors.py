"""The project's small exception tree. Third-party errors are translated at the edge with
`raise ...Error(...) from exc`, so callers see one category: retryable or permanent."""

from __future__ import annotations


class OperatorError(Exception):
    """Base for every error this package raises on purpose."""

    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable


class ModelNotFoundError(OperatorError):
    """A local model file or directory is missing; the message says which and how to fix it."""


class MissingPackageError(OperatorError):
    """A package that a configured provider needs is not installed; the message says which
    and how to install it."""


class ProtocolError(OperatorError):
    """A client sent something the WebSocket protocol does not allow."""


class ProviderError(OperatorError):
    """A speech or language provider failed. `retryable` tells failover what to do."""

    def __init__(self, stage: str, provider: str, message: str, *, retryable: bool) -> None:
        super().__init__(f"{stage} provider '{provider}' failed: {message}", retryable=retryable)
        self.stage = stage
        self.provider = provider


def http_status_retryable(status: int) -> bool:
    """A 4xx is permanent except 408 (timeout) and 429 (rate limit); 5xx is retryable."""
    return status in (408, 429) or status >= 500
