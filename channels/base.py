"""The contract between a channel and the rest of ingestd."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ingest.message import InboundMessage

# Turns a journaled message (raw bytes and the listener's metadata) back into
# an InboundMessage; runs in the pipeline, never on the acknowledgement path.
Parser = Callable[[bytes, dict[str, Any]], InboundMessage]


class Channel(Protocol):
    """A listener inside the daemon's event loop."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None:
        """Stop taking new messages; let the ones in flight finish."""
