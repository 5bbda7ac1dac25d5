"""Dashboard users: who may record decisions (operators) and who may also change settings (engineers).

Passwords are hashed with argon2id (argon2-cffi's ``PasswordHasher`` defaults, salted per user);
only the hash is stored. A wrong name and a wrong password take the same time and give the same
answer, so the login does not tell which names exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from oringscan.db.errors import StoreError
from oringscan.db.models import USER_ROLES, User

MIN_PASSWORD_LENGTH = 8
# What each role may do on the dashboard.
PERMISSIONS: dict[str, frozenset[str]] = {
    "operator": frozenset({"review"}),
    "engineer": frozenset({"review", "settings"}),
}


@dataclass(frozen=True, slots=True)
class UserRow:
    id: int
    name: str
    role: str
    created_at: datetime
    disabled: bool

    def may(self, action: str) -> bool:
        """Whether this user's role allows ``action`` ("review", "settings")."""
        return not self.disabled and action in PERMISSIONS.get(self.role, frozenset())


def _hasher() -> Any:
    from argon2 import PasswordHasher

    return PasswordHasher()


# Verified against when the name is unknown, so both failures cost one argon2 verification.
_DUMMY_HASH: str | None = None


def _row(user: User) -> UserRow:
    from oringscan.db.store import utc

    return UserRow(user.id, user.name, user.role, utc(user.created_at), bool(user.disabled))


def check_name(name: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > 128 or any(not ch.isprintable() for ch in name):
        raise StoreError(f"{name!r}: a user name is 1-128 printable characters")
    return name


def add_user(store: Any, name: str, role: str, password: str) -> UserRow:
    """Create a user; the name must be new, the role operator or engineer, the password >= 8 characters."""
    from oringscan.db.store import now_utc

    name = check_name(name)
    if role not in USER_ROLES:
        raise StoreError(f"{name}: role must be one of {', '.join(USER_ROLES)} (got {role!r})")
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise StoreError(f"{name}: the password needs at least {MIN_PASSWORD_LENGTH} characters")
    user = User(
        name=name, role=role, password_hash=_hasher().hash(password), created_at=now_utc(), disabled=False
    )
    try:
        with store.write_session() as session:
            session.add(user)
            session.flush()
            return _row(user)
    except IntegrityError:
        raise StoreError(f"{name}: a user of that name exists already") from None


def set_password(store: Any, name: str, password: str) -> None:
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise StoreError(f"{name}: the password needs at least {MIN_PASSWORD_LENGTH} characters")
    with store.write_session() as session:
        user = session.scalar(select(User).where(User.name == name))
        if user is None:
            raise StoreError(f"{name}: no such user")
        user.password_hash = _hasher().hash(password)


def set_disabled(store: Any, name: str, disabled: bool) -> None:
    with store.write_session() as session:
        user = session.scalar(select(User).where(User.name == name))
        if user is None:
            raise StoreError(f"{name}: no such user")
        user.disabled = disabled


def list_users(store: Any) -> list[UserRow]:
    with store.read_session() as session:
        return [_row(u) for u in session.scalars(select(User).order_by(User.name))]


def count_users(store: Any) -> int:
    return len(list_users(store))


def authenticate(store: Any, name: str, password: str) -> UserRow | None:
    """The user when the name and password match and the account is enabled, else None."""
    from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

    global _DUMMY_HASH
    hasher = _hasher()
    with store.read_session() as session:
        user = session.scalar(select(User).where(User.name == (name or "").strip()))
        row = None if user is None else _row(user)
        stored = None if user is None else user.password_hash
    if stored is None:
        if _DUMMY_HASH is None:
            _DUMMY_HASH = hasher.hash("not a password of anyone")
        stored = _DUMMY_HASH
    try:
        hasher.verify(stored, password or "")
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if row is None or row.disabled:
        return None
    return row
