"""Every error code of the system, in one enum, and the base of the service exception hierarchy.

Codes are stored in the database (cancel reasons, scrape and attempt errors) and shown on the
dashboard, so a member's value never changes once released.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    # Why a market was cancelled (PRODUCT.md section 3).
    MISSING_METADATA = "MISSING_METADATA"
    MISSING_KOL_DATA = "MISSING_KOL_DATA"
    SCRAPE_FAILED = "SCRAPE_FAILED"
    STALE_SCRAPE_DATA = "STALE_SCRAPE_DATA"
    X_API_UNAVAILABLE = "X_API_UNAVAILABLE"
    STALE_FOLLOWER_DATA = "STALE_FOLLOWER_DATA"
    SETTLEMENT_FAILED = "SETTLEMENT_FAILED"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    OPERATOR_CANCELLED = "OPERATOR_CANCELLED"

    # Scraping the leaderboard.
    SCRAPE_TIMEOUT = "SCRAPE_TIMEOUT"
    SCRAPE_NAVIGATION_ERROR = "SCRAPE_NAVIGATION_ERROR"
    SCRAPE_HTTP_ERROR = "SCRAPE_HTTP_ERROR"
    SCRAPE_NO_ROWS = "SCRAPE_NO_ROWS"
    SCRAPE_LAYOUT_CHANGED = "SCRAPE_LAYOUT_CHANGED"
    SCRAPE_BROWSER_ERROR = "SCRAPE_BROWSER_ERROR"
    # A run whose process died before finishing it (kill -9, power loss).
    ABANDONED = "ABANDONED"

    # Parsing one scraped row (stored on the reject).
    PARSE_MISSING_FIELD = "PARSE_MISSING_FIELD"
    PARSE_BAD_NUMBER = "PARSE_BAD_NUMBER"
    PARSE_BAD_RECORD = "PARSE_BAD_RECORD"
    PARSE_BAD_WALLET = "PARSE_BAD_WALLET"
    PARSE_BAD_HANDLE = "PARSE_BAD_HANDLE"
    PARSE_DUPLICATE_WALLET = "PARSE_DUPLICATE_WALLET"

    # The X API.
    X_USER_NOT_FOUND = "X_USER_NOT_FOUND"
    X_USER_SUSPENDED = "X_USER_SUSPENDED"
    X_API_UNAUTHORIZED = "X_API_UNAUTHORIZED"
    X_API_RATE_LIMITED = "X_API_RATE_LIMITED"
    X_API_MALFORMED = "X_API_MALFORMED"
    X_API_REJECTED = "X_API_REJECTED"

    # Money: bets, ledger, settlement.
    UNKNOWN_USER = "UNKNOWN_USER"
    UNKNOWN_MARKET = "UNKNOWN_MARKET"
    MARKET_NOT_OPEN = "MARKET_NOT_OPEN"
    MARKET_CLOSED = "MARKET_CLOSED"
    MARKET_ON_HOLD = "MARKET_ON_HOLD"  # an operator's hold (issue 17)
    INVALID_AMOUNT = "INVALID_AMOUNT"
    INVALID_SIDE = "INVALID_SIDE"
    INVALID_ACTION = "INVALID_ACTION"
    INSUFFICIENT_BALANCE = "INSUFFICIENT_BALANCE"
    INSUFFICIENT_SHARES = "INSUFFICIENT_SHARES"
    PRICE_LIMIT = "PRICE_LIMIT"
    TRADE_TOO_LARGE = "TRADE_TOO_LARGE"
    SLIPPAGE_EXCEEDED = "SLIPPAGE_EXCEEDED"
    UNBALANCED_TRANSACTION = "UNBALANCED_TRANSACTION"
    INVALID_LEDGER_ENTRY = "INVALID_LEDGER_ENTRY"
    ALREADY_FINAL = "ALREADY_FINAL"
    STATE_CHANGED = "STATE_CHANGED"
    NEGATIVE_BALANCE = "NEGATIVE_BALANCE"
    INVALID_MARKET = "INVALID_MARKET"
    DUPLICATE_MARKET = "DUPLICATE_MARKET"
    # A bet's request key already names a bet placed with other parameters.
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"

    # Dashboard.
    NOT_AUTHENTICATED = "NOT_AUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    REASON_REQUIRED = "REASON_REQUIRED"
    INVALID_INPUT = "INVALID_INPUT"
    NOT_FOUND = "NOT_FOUND"
    # Too many failed logins for a username or from an address (issue 15).
    LOGIN_THROTTLED = "LOGIN_THROTTLED"


class ServiceError(Exception):
    """A refusal a caller can act on: a code from `ErrorCode`, a human message and details."""

    def __init__(self, code: ErrorCode, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return f"{self.code.value}: {self.message}"
