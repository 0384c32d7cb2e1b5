"""The one way users are created: once, in bulk or alone, never changed afterwards."""

import uuid

from sqlalchemy import text

from t2m_pipeline.db.engine import in_transaction
from t2m_pipeline.db.users import NewUser, ensure_user, ensure_users


def test_users_are_created_once_and_never_changed(engine):
    a, b = f"user_{uuid.uuid4().hex[:10]}", f"user_{uuid.uuid4().hex[:10]}"
    first = in_transaction(engine, lambda c: ensure_users(c, {a: NewUser("a@example.com", {"source": "x"})}))
    again = in_transaction(engine, lambda c: ensure_users(c, {a: NewUser("changed@example.com"), b: NewUser()}))
    assert len(first.created) == 1 and again.created == [again.ids[b]] and again.ids[a] == first.ids[a]
    assert in_transaction(engine, lambda c: ensure_user(c, a, "other@example.com")) == first.ids[a]
    with engine.connect() as conn:
        email, meta = conn.execute(text("SELECT email, metadata FROM users WHERE id = :i"), {"i": first.ids[a]}).one()
    assert (email, meta) == ("a@example.com", {"source": "x"})
