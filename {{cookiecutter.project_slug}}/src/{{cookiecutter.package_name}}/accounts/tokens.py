"""API token strings: made, recognised and hashed. No database here.

A token reads ``{{ cookiecutter.package_name }}_pat_`` + 40 random base62
characters + a 6-character CRC32 checksum of what precedes it. The prefix
lets secret scanners (GitHub's, gitleaks, trufflehog) find a leaked token
with a plain pattern, and the checksum lets them, and this service, reject
a mistyped or made-up one without a database query. 40 base62 characters
carry 238 bits of randomness, so a fast SHA-256 digest is the right way to
store them: there is nothing to guess that a slow password hash would guard.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
import zlib

PREFIX = "{{ cookiecutter.package_name }}_pat_"
ALPHABET = string.digits + string.ascii_letters
RANDOM_LENGTH = 40
CHECKSUM_LENGTH = 6
LENGTH = len(PREFIX) + RANDOM_LENGTH + CHECKSUM_LENGTH
PATTERN = re.compile(rf"^{re.escape(PREFIX)}[0-9A-Za-z]+$")


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, digit = divmod(number, len(ALPHABET))
        digits.append(ALPHABET[digit])
    return "".join(reversed(digits))


def _checksum(text: str) -> str:
    return _base62(zlib.crc32(text.encode()), CHECKSUM_LENGTH)


def generate() -> str:
    """A new token, to show once and never store."""
    body = PREFIX + "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_LENGTH))
    return body + _checksum(body)


def well_formed(token: str) -> bool:
    """Prefix, alphabet, length and checksum are right (says nothing about
    whether the token was ever issued)."""
    if len(token) != LENGTH or not PATTERN.fullmatch(token):
        return False
    body, checksum = token[:-CHECKSUM_LENGTH], token[-CHECKSUM_LENGTH:]
    return secrets.compare_digest(_checksum(body), checksum)


def digest(token: str) -> str:
    """What the database stores and looks tokens up by."""
    return hashlib.sha256(token.encode()).hexdigest()
