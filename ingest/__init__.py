"""ingestd: every customer message becomes a case, routed and on the clock."""

__version__ = "0.1.0"
