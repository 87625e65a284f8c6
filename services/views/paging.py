"""The one paging convention of the read models: a view takes `limit` and `offset`, checks them
with `check_page`, and returns a `Page` (one page of rows and the size of the whole list)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.errors import ErrorCode, ServiceError

MAX_PAGE_SIZE = 500


@dataclass(frozen=True)
class Page:
    """One page of a list, the number of rows in the whole list, and where the page starts."""

    rows: list[dict[str, Any]]
    total: int
    offset: int = 0

    @property
    def first(self) -> int:
        """The 1-based position of the page's first row (0 when the page is empty)."""
        return self.offset + 1 if self.rows else 0

    @property
    def last(self) -> int:
        """The 1-based position of the page's last row (0 when the page is empty)."""
        return self.offset + len(self.rows) if self.rows else 0


EMPTY = Page([], 0)


def check_page(limit: int, offset: int = 0) -> None:
    """Refuse a page size outside 1..MAX_PAGE_SIZE or a negative offset."""
    if (
        not isinstance(limit, int)
        or not isinstance(offset, int)
        or not 1 <= limit <= MAX_PAGE_SIZE
        or offset < 0
    ):
        raise ServiceError(
            ErrorCode.INVALID_INPUT, f"page size must be 1..{MAX_PAGE_SIZE} and offset >= 0"
        )
