"""Persistence: SQLAlchemy models, the Store (engines and sessions), migrations."""

from ingest.store.session import Store, StoreUnavailable

__all__ = ["Store", "StoreUnavailable"]
