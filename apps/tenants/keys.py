"""What an API key looks like: `lf_live_` + 32 random base62 characters + a 6-character checksum.

    lf_live_4xVq0c9ZkT3mB7pLr2WnYe8HsJd1Fg6A0a1b2C

The prefix says what the string is (a secret scanner, or a person, recognises it); the
checksum (CRC32 of the random part, in base62, as GitHub's tokens have) lets the intake refuse
a mistyped, truncated or made-up key before any lookup, with no SQL and no Redis call. It is
not a secret: anyone can compute it, so it filters garbage, not attackers, whom the per-IP
limit ahead of every lookup slows down (apps/intake/authentication.py).

Keys made before this format (`lf_` + 43 URL-safe characters) keep working: they have no
checksum, so they are looked up as before (after the per-IP limit). Rotate them to the new
format (`manage.py api_key rotate`). (A legacy key whose random part happened to begin with
"live_", one in a billion, reads as a new key with a wrong checksum and is refused.)
"""

import hashlib
import re
import secrets
import string
import zlib

LIVE_PREFIX = "lf_live_"
_ALPHABET = string.digits + string.ascii_letters  # base62: no "_" or "-", double-click selects it
_RANDOM_LENGTH = 32  # 190 bits
_CHECKSUM_LENGTH = 6  # 62^6 > 2^32: a CRC32 always fits
LIVE_KEY_LENGTH = len(LIVE_PREFIX) + _RANDOM_LENGTH + _CHECKSUM_LENGTH
_LIVE_KEY = re.compile(rf"lf_live_[0-9A-Za-z]{{{_RANDOM_LENGTH + _CHECKSUM_LENGTH}}}")
_LEGACY_KEY = re.compile(r"lf_[A-Za-z0-9_-]{43}")  # "lf_" + secrets.token_urlsafe(32)
# How many characters of a key are kept in clear, to recognise it in lists (the prefix and 4
# random characters: too few to help guessing the other 186 bits).
DISPLAY_PREFIX_LENGTH = len(LIVE_PREFIX) + 4


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        digits.append(_ALPHABET[digit])
    return "".join(reversed(digits))


def _checksum(random_part: str) -> str:
    return _base62(zlib.crc32(random_part.encode()), _CHECKSUM_LENGTH)


def api_key_generate() -> str:
    random_part = "".join(secrets.choice(_ALPHABET) for _ in range(_RANDOM_LENGTH))
    return LIVE_PREFIX + random_part + _checksum(random_part)


def api_key_well_formed(raw_key: str) -> bool:
    """Whether this could be a key LeadFlow made: the current format with a valid checksum, or
    the legacy one. No I/O: garbage is refused on this alone."""
    if _LIVE_KEY.fullmatch(raw_key):
        random_part = raw_key[len(LIVE_PREFIX) : len(LIVE_PREFIX) + _RANDOM_LENGTH]
        return raw_key[-_CHECKSUM_LENGTH:] == _checksum(random_part)
    return _LEGACY_KEY.fullmatch(raw_key) is not None


def api_key_is_legacy(raw_key: str) -> bool:
    return not raw_key.startswith(LIVE_PREFIX) and _LEGACY_KEY.fullmatch(raw_key) is not None


def api_key_digest(raw_key: str) -> str:
    # Keys are 190-bit random tokens, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(raw_key.encode()).hexdigest()
