"""DynamoDB storage through PynamoDB: one table, typed items, conditional writes."""

from .store import DynamoStore
from .table import ensure_table

__all__ = ["DynamoStore", "ensure_table"]
