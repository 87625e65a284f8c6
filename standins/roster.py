"""The KOLs both stand-ins know: the same wallets on the fake leaderboard and the same handles on
the fake X API, so the demo's markets can be decided from either source."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

_NAMES = [
    "Cented",
    "Jijo",
    "Cupsey",
    "Euris",
    "Loopier",
    "Orangie",
    "Dior",
    "Gake",
    "Jidn",
    "Daumen",
    "Zrool",
    "Kadenox",
    "Bastille",
    "Sheep",
    "Pain",
    "Cooker",
    "Waddles",
    "Trey",
    "Ansem",
    "Nach",
    "Kev",
    "Publix",
    "Zil",
    "Solstice",
    "Frank",
    "Leens",
    "Mitch",
    "Ataberk",
    "Hail",
    "Groovy",
    "Yenni",
    "Tim",
    "Insentos",
    "Kreo",
    "Casino",
    "Marcell",
    "Chester",
    "Sebastian",
    "Rilsio",
    "Exy",
]


@dataclass(frozen=True)
class RosterKol:
    name: str
    wallet: str
    x_handle: str | None


def wallet_for(seed: str) -> str:
    """A base58 wallet address, 44 characters, derived from `seed`."""
    digest = hashlib.sha512(seed.encode()).digest()
    return "".join(_B58[b % 58] for b in digest[:44])


def roster() -> list[RosterKol]:
    """40 KOLs; every seventh has no X handle (as on the real leaderboard)."""
    return [
        RosterKol(
            name=name,
            wallet=wallet_for(name),
            x_handle=None if i % 7 == 6 else f"{name.lower()}_sol",
        )
        for i, name in enumerate(_NAMES)
    ]
