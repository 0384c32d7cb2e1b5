"""Users: the one way a row of `users` is created. A user is known by their Clerk id; an existing row is never
changed (its email and metadata stay as first written), so concurrent and repeated callers all get the same row."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Connection

_INSERT = text(
    "INSERT INTO users (clerk_user_id, email, metadata) "
    "SELECT c, e, CAST(m AS jsonb) FROM unnest(CAST(:ids AS text[]), CAST(:emails AS text[]), CAST(:meta AS text[])) AS t(c, e, m) "
    "ON CONFLICT (clerk_user_id) DO NOTHING RETURNING id"
)
_IDS = text("SELECT clerk_user_id, id FROM users WHERE clerk_user_id = ANY(CAST(:ids AS text[]))")


@dataclass(frozen=True)
class NewUser:
    email: str = ""
    metadata: dict | None = None


@dataclass(frozen=True)
class EnsuredUsers:
    ids: dict[str, uuid.UUID]  # clerk id -> users.id, for every user asked for
    created: list[uuid.UUID]  # the rows this call inserted (a migration batch records them for its rollback)


def ensure_users(conn: Connection, users: Mapping[str, NewUser]) -> EnsuredUsers:
    """Every user asked for, inserted when new (one statement however many), with their ids. Those that exist are
    read first, so a caller that asks again for the same users (a migration's rerun, wave after wave) only reads."""
    if not users:
        return EnsuredUsers({}, [])
    ids = {r.clerk_user_id: r.id for r in conn.execute(_IDS, {"ids": sorted(users)})}
    missing = sorted(set(users) - set(ids))
    if not missing:
        return EnsuredUsers(ids, [])
    created = conn.execute(
        _INSERT,
        {
            "ids": missing,
            "emails": [users[c].email or "" for c in missing],
            "meta": [None if users[c].metadata is None else json.dumps(users[c].metadata) for c in missing],
        },
    ).scalars().all()
    ids |= {r.clerk_user_id: r.id for r in conn.execute(_IDS, {"ids": missing})}  # a concurrent caller's rows too
    return EnsuredUsers(ids, list(created))


def ensure_user(conn: Connection, clerk_user_id: str, email: str = "", metadata: dict | None = None) -> uuid.UUID:
    """One user's id, creating the row when new."""
    return ensure_users(conn, {clerk_user_id: NewUser(email, metadata)}).ids[clerk_user_id]
