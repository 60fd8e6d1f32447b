"""Password hashing with argon2id (argon2-cffi) at OWASP strength.

The parameters come from the config (`ARGON2_*`, defaults m=19 MiB, t=2, p=1: OWASP's first
argon2id profile); a hash made with other parameters is upgraded at the next successful sign-in.
"""

from __future__ import annotations

from functools import cache

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app

MIN_LENGTH = 12
MAX_LENGTH = 1024


@cache
def _hasher(time_cost: int, memory_cost: int, parallelism: int) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism, type=Type.ID)


def hasher() -> PasswordHasher:
    c = current_app.config
    return _hasher(c["ARGON2_TIME_COST"], c["ARGON2_MEMORY_COST"], c["ARGON2_PARALLELISM"])


def hash_password(password: str) -> str:
    return hasher().hash(password)


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with other parameters than the configured ones."""
    try:
        return hasher().check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether `password` matches. A user made by single sign-on has no hash: nothing matches, in
    the time a real check takes, so such an account looks like any other at the sign-in form."""
    if password_hash is None:
        burn_time(password)
        return False
    try:
        return hasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


# A real hash to verify against when the email is unknown, so timing does not tell.
_DUMMY: dict[str, str] = {}


def burn_time(password: str) -> None:
    key = repr(current_app.config["ARGON2_MEMORY_COST"])
    if key not in _DUMMY:
        _DUMMY[key] = hash_password("not a real password, only for timing")
    verify_password(_DUMMY[key], password)
