"""Change events that become visible out of id order (PostgreSQL with several writers) still reach
every server: an id skipped over is asked for again until it shows up."""

import requests
from sqlalchemy import delete, func, select

from gateway import db
from gateway.memo import MEMO
from gateway.models import ChangeEvent
from gateway.services import tenancy
from tests.conftest import wait_for


def secret_works(gateway, secret: str) -> bool:
    return requests.get(gateway.v1 + "/models", headers={"Authorization": f"Bearer {secret}"}).status_code == 200


def test_an_event_committed_after_a_higher_id_is_still_applied(gateway):
    gateway.flush()
    base = MEMO.last_event_id
    # A later transaction commits first: id base+2 is visible, base+1 is not yet.
    with db.write_lock, db.session_scope() as s:
        s.add(ChangeEvent(id=base + 2, topic="catalog"))
    wait_for(lambda: MEMO.last_event_id == base + 2)
    assert base + 1 in MEMO.gaps
    # Then the earlier one commits: a key created under id base+1.
    with db.write_lock, db.session_scope() as s:
        secret = tenancy.create_key(s, tenancy.org_by_name(s, "default"), name="late", actor="test").secret
        s.flush()
        s.execute(delete(ChangeEvent).where(ChangeEvent.id > base + 2))  # the event create_key appended
        s.add(ChangeEvent(id=base + 1, topic="keys"))
    assert wait_for(lambda: secret_works(gateway, secret), timeout=5)
    assert base + 1 not in MEMO.gaps and MEMO.last_event_id == base + 2
    with db.session_scope() as s:
        assert s.scalar(select(ChangeEvent.topic).where(ChangeEvent.id == base + 1)) == "keys"


def test_pruning_a_quiet_day_keeps_ids_moving_forward(gateway):
    """After a day without admin changes every event is old; pruning must keep the newest, or SQLite
    would number the next event 1 and no server would ever look at it."""
    from datetime import timedelta

    from sqlalchemy import update

    from gateway import jobs
    from gateway.models import utcnow

    gateway.flush()
    with db.write_lock, db.session_scope() as s:
        s.execute(update(ChangeEvent).values(created_at=utcnow() - timedelta(days=2)))
        newest = s.scalar(select(func.max(ChangeEvent.id)))
    jobs.prune_change_events()
    with db.session_scope() as s:
        assert list(s.scalars(select(ChangeEvent.id))) == [newest]
    with db.write_lock, db.session_scope() as s:  # the next change after the quiet day
        secret = tenancy.create_key(s, tenancy.org_by_name(s, "default"), name="next-day", actor="test").secret
    assert wait_for(lambda: secret_works(gateway, secret), timeout=5)
