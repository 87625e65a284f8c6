"""Everything the scraper knows about the kolscan.io leaderboard page, in one place.

When the site changes, this is the file to change: the URL scheme, how a row is found, where each
column lives, the one in-page script that reads all rows, and the thresholds that tell a changed
layout from a few odd rows. Nothing here parses a number; that is `leaderboard_parser`'s job.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from services.vocabulary import Timeframe

# `/leaderboard?timeframe=N`: N is the number of days the board covers (`Timeframe.kolscan_param`).
LEADERBOARD_PATH = "/leaderboard"

# A row is the parent element of its account link; the wallet is the link's last path segment.
ROW_LINK_SELECTOR = 'a[href^="/account/"]'
ACCOUNT_PATH_PREFIX = "/account/"
# The name: a heading or name-classed element, looked for inside the account link first.
NAME_SELECTOR = 'h1, h2, h3, h4, h5, h6, [class*="name" i]'
# X profile links; intent/status links also match and are told apart by the parser.
X_LINK_SELECTOR = 'a[href*="x.com/"], a[href*="twitter.com/"]'
X_HOSTS = frozenset({"x.com", "www.x.com", "twitter.com", "www.twitter.com", "mobile.twitter.com"})
# What the site shows instead of rows when a timeframe has no KOLs.
EMPTY_STATE_SELECTOR = '[class*="empty" i]'
# The page is ready once it shows either a row or its empty state.
READY_SELECTOR = f"{ROW_LINK_SELECTOR}, {EMPTY_STATE_SELECTOR}"

# The numeric columns carry no stable class names, so a cell is found by the shape of its text:
# the innermost element of the row (outside links and the name) whose trimmed text matches.
# These patterns only locate a cell; whether its value is valid is decided by the parser.
RECORD_TEXT = r"^[^\s/]+\s*/\s*[^\s/]+$"  # "123/45"
SOL_TEXT = r"^[^()]*\bSol$"  # "+122.75 Sol" (flags "i")
USD_TEXT = r"^\(.*\)$"  # "($23,820.3)"

# More than this share of rows unreadable (a required column missing, or a value in a shape the
# parser does not know) means the page changed, not the data: the run fails instead.
LAYOUT_CHANGED_REJECTED_SHARE = 0.5

# Infinite scroll: after scrolling to the bottom, how long to wait for the next batch before
# deciding the list is complete, and a bound on rounds so a runaway page cannot hold us forever.
SCROLL_IDLE_MS = 500
MAX_SCROLL_ROUNDS = 200

ROW_COUNT_JS = "(selector) => document.querySelectorAll(selector).length"
# Polled each animation frame: bring the last row into view (whatever element scrolls: the
# window or an inner container), and return the row count once it passes `seen`. Scrolling
# before checking asks for the next batch while Python is still handling this one.
SCROLL_FOR_MORE_JS = """
([selector, seen]) => {
  const rows = document.querySelectorAll(selector);
  if (rows.length) rows[rows.length - 1].scrollIntoView({ block: "end" });
  return rows.length > seen ? rows.length : false;
}
"""

# The one in-page evaluation: every row's raw strings, in page order (rank = position), as one
# JSON string, which crosses to Python several times faster than a thousand objects.
EXTRACT_ROWS_JS = """
(cfg) => {
  const patterns = {
    record: new RegExp(cfg.recordText),
    sol: new RegExp(cfg.solText, "i"),
    usd: new RegExp(cfg.usdText),
  };
  const innermost = (els) => {
    const leaf = els.find((e) => !els.some((o) => o !== e && e.contains(o)));
    return leaf ? leaf.textContent : null;
  };
  const seen = new Set();
  const rows = [];
  for (const link of document.querySelectorAll(cfg.rowLink)) {
    const row = link.parentElement;
    if (!row || seen.has(row)) continue;
    seen.add(row);
    const nameEl = link.querySelector(cfg.name) || row.querySelector(cfg.name);
    const cells = { record: [], sol: [], usd: [] };
    for (const el of row.querySelectorAll("*")) {
      if (el.closest("a") || (nameEl && nameEl.contains(el))) continue;
      const text = el.textContent.trim();
      for (const key in patterns) if (patterns[key].test(text)) cells[key].push(el);
    }
    rows.push({
      href: link.getAttribute("href"),
      name: nameEl ? nameEl.textContent : null,
      x_hrefs: Array.from(row.querySelectorAll(cfg.xLink), (a) => a.getAttribute("href")),
      record: innermost(cells.record),
      sol: innermost(cells.sol),
      usd: innermost(cells.usd),
    });
  }
  return JSON.stringify(rows);
}
"""

EXTRACT_CONFIG: dict[str, Any] = {
    "rowLink": ROW_LINK_SELECTOR,
    "name": NAME_SELECTOR,
    "xLink": X_LINK_SELECTOR,
    "recordText": RECORD_TEXT,
    "solText": SOL_TEXT,
    "usdText": USD_TEXT,
}


def leaderboard_url(base_url: str, timeframe: Timeframe) -> str:
    """The leaderboard page of one timeframe."""
    query = urlencode({"timeframe": timeframe.kolscan_param})
    return f"{base_url.rstrip('/')}{LEADERBOARD_PATH}?{query}"
