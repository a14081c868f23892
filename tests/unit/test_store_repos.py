"""Repositories on a real (SQLite) store built by the migrations: keys, paging, the job lease, status
moves, transactions through an unavailable database, the outbox and lost-message recovery."""

from __future__ import annotations

import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import create_engine, func, select

from store.broker import jobs_in_broker, make_celery
from store.db import StoreUnavailable, make_engine, make_sessionmaker, transact
from store.dispatch import publish, recover_lost
from store.migrate import upgrade
from store.models import Checkpoint, Job, Preflight
from store.repos import Checkpoints, Events, Jobs, Keys, Metrics, Outboxes, Preflights, hash_key
from store.settings import Settings


@pytest.fixture
def session(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url)
    with make_sessionmaker(make_engine(Settings(database_url=url)))() as s:
        yield s


def make_job(s, project_id: str) -> Job:
    job = Job(
        project_id=project_id,
        model="tiny-random",
        training_file="file-x",
        method={"grader": {}},
        config={},
        queue="cpu",
    )
    return Jobs(s).add(job)


def test_api_keys_are_stored_hashed_and_resolve_to_their_project(session):
    key, secret = Keys(session).create("alpha")
    session.commit()
    assert key.key_hash == hash_key(secret) and secret not in key.key_hash
    assert Keys(session).project_of(secret) == key.project_id
    assert Keys(session).project_of(secret + "x") is None
    _, second = Keys(session).create("alpha")
    assert Keys(session).project_of(second) == key.project_id  # same project, second key


def test_keys_made_within_one_second_list_in_creation_order(session):
    made = [Keys(session).create("alpha")[0].id for _ in range(20)]
    session.commit()
    listed = [key for key, _ in Keys(session).all("alpha")]
    assert len({key.created_at for key in listed}) <= 2  # whole seconds cannot order them
    assert [key.id for key in listed] == made


def test_job_pages_are_newest_first_and_scoped_to_the_project(session):
    key, _ = Keys(session).create("alpha")
    other, _ = Keys(session).create("beta")
    ids = [make_job(session, key.project_id).id for _ in range(5)]
    make_job(session, other.project_id)
    first, more = Jobs(session).page(key.project_id, None, 2)
    assert [j.id for j in first] == ids[::-1][:2] and more
    rest, more = Jobs(session).page(key.project_id, first[-1].id, 10)
    assert [j.id for j in rest] == ids[::-1][2:] and not more
    assert Jobs(session).get(other.project_id, ids[0]) is None


def test_lease_keeps_a_second_worker_out_until_it_expires(session):
    key, _ = Keys(session).create("alpha")
    job = make_job(session, key.project_id)
    jobs = Jobs(session)
    assert jobs.acquire_lease(job.id, "w1", 0.2)
    assert not jobs.acquire_lease(job.id, "w2", 10)  # a live owner: the redelivery exits
    assert jobs.orphaned() == []
    time.sleep(0.3)
    assert jobs.orphaned() == [(job.id, "w1")]  # w1 stopped renewing: it is gone
    assert jobs.acquire_lease(job.id, "w2", 10)
    assert not jobs.renew_lease(job.id, "w1", 10)  # w1 learns it lost the job


def test_lease_is_refused_for_finished_and_paused_jobs(session):
    key, _ = Keys(session).create("alpha")
    for status in ("succeeded", "failed", "cancelled", "paused"):
        job = make_job(session, key.project_id)
        job.status = status
        session.flush()
        assert not Jobs(session).acquire_lease(job.id, "w1", 10), status


def test_events_page_newest_first(session):
    key, _ = Keys(session).create("alpha")
    job = make_job(session, key.project_id)
    for i in range(3):
        Events(session).add(job.id, f"event {i}")
    page, more = Events(session).page(job.id, None, 2)
    assert [e.message for e in page] == ["event 2", "event 1"] and more


def test_status_moves_are_compare_and_set_and_write_their_event_once(session):
    key, _ = Keys(session).create("alpha")
    job = make_job(session, key.project_id)
    jobs = Jobs(session)
    assert jobs.move(job.id, "cancel", event="cancelled")
    assert not jobs.move(job.id, "cancel", event="cancelled")  # the second cancel lost
    assert not jobs.move(job.id, "pause", event="paused")
    assert not jobs.move(job.id, "resume", event="resumed")  # a cancelled job never runs again
    assert not jobs.move(job.id, "start") and not jobs.move(job.id, "succeed")
    session.commit()
    assert jobs.status(job.id) == "cancelled" and jobs.by_id(job.id).finished_at
    assert [e.message for e in Events(session).page(job.id, None, 10)[0]] == ["cancelled"]


def test_succeed_is_refused_once_a_job_is_paused_or_cancelled(session):
    key, _ = Keys(session).create("alpha")
    for stop in ("pause", "cancel"):
        job = make_job(session, key.project_id)
        assert Jobs(session).move(job.id, "start")
        assert Jobs(session).move(job.id, stop)
        assert not Jobs(session).move(job.id, "succeed", fine_tuned_model="ft:x")
        session.commit()
        session.refresh(job)
        assert job.status in ("paused", "cancelled") and job.fine_tuned_model is None


def test_concurrent_cancels_and_a_pause_tell_the_truth(tmp_path):
    """Two cancels and a pause at once: one cancel wins; the pause wins only if it came first (a paused
    job can still be cancelled); every winner, and only a winner, wrote its event; cancelled is final."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url)
    sessions = make_sessionmaker(make_engine(Settings(database_url=url)))
    with sessions() as s:
        project = Keys(s).create("alpha")[0].project_id
        ids = [make_job(s, project).id for _ in range(20)]
        s.commit()

    def attempt(job_id: str, move: str) -> bool:
        return transact(sessions, lambda s: Jobs(s).move(job_id, move, event=move), retry_for=30)

    with ThreadPoolExecutor(8) as pool:
        results = [(j, m, pool.submit(attempt, j, m)) for j in ids for m in ("cancel", "cancel", "pause")]
    with sessions() as s:
        for job_id in ids:
            won = [m for j, m, f in results if j == job_id and f.result()]
            assert won.count("cancel") == 1, won
            events = [e.message for e in Events(s).page(job_id, None, 10)[0]][::-1]
            assert events == (["pause", "cancel"] if "pause" in won else ["cancel"]), events
            assert Jobs(s).status(job_id) == "cancelled"


def test_transact_rides_out_a_locked_database_and_gives_up_after_its_window(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url)
    sessions = make_sessionmaker(create_engine(url, connect_args={"timeout": 0.05}))
    with sessions() as s:
        project = Keys(s).create("alpha")[0].project_id
        s.commit()
    blocker = sqlite3.connect(tmp_path / "store.db", check_same_thread=False)
    blocker.execute("BEGIN EXCLUSIVE")  # another writer holds the database
    release = threading.Timer(1.0, blocker.rollback)
    release.start()
    started = time.monotonic()
    job = transact(sessions, lambda s: make_job(s, project), retry_for=20)
    assert 0.9 < time.monotonic() - started < 10 and job.id
    blocker.execute("BEGIN EXCLUSIVE")
    with pytest.raises(StoreUnavailable) as err:
        transact(sessions, lambda s: make_job(s, project), retry_for=1)
    blocker.rollback()
    assert str(err.value) == "The database was unreachable for 1 s"  # no SQL in what a tenant may see


def test_outbox_rows_are_published_once_and_lost_messages_found_again(tmp_path):
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'store.db'}", broker_dir=tmp_path / "broker")
    settings.ensure_dirs()
    upgrade(settings.database_url)
    sessions, celery = make_sessionmaker(make_engine(settings)), make_celery(settings)
    with sessions() as s:
        job = make_job(s, Keys(s).create("alpha")[0].project_id)
        Outboxes(s).add(job.id, "cpu")
        s.commit()
    assert publish(sessions, celery) == [job.id]
    assert publish(sessions, celery) == []  # the row is gone with its message sent
    assert jobs_in_broker(celery) == {job.id}
    assert recover_lost(sessions, celery, set()) == ([], set())  # its message is there

    for message in (settings.broker_dir / "queue").glob("*.msg"):
        message.unlink()  # the broker lost it
    lost, suspects = recover_lost(sessions, celery, set())
    assert lost == [] and suspects == {job.id}  # missing once: maybe a worker just took it
    lost, suspects = recover_lost(sessions, celery, suspects)
    assert lost == [job.id] and suspects == set() and jobs_in_broker(celery) == {job.id}
    with sessions() as s:
        assert Jobs(s).move(job.id, "start")  # a worker has it now: nothing is looked for
        s.commit()
    for message in (settings.broker_dir / "queue").glob("*.msg"):
        message.unlink()
    assert recover_lost(sessions, celery, {job.id}) == ([], set())


def test_one_checkpoint_is_marked_best_and_a_redone_round_forgets_its_evaluation(session):
    key, _ = Keys(session).create("alpha")
    job = make_job(session, key.project_id)
    repo = Checkpoints(session)
    for r in (1, 2, 3):
        repo.put(
            Checkpoint(
                job_id=job.id,
                round=r,
                step_number=2 * r,
                name=f"c{r}",
                metrics={"loss": 0.5},
                storage_key=f"k{r}",
            )
        )
    repo.put(
        Checkpoint(job_id=job.id, round=3, step_number=6, final=True, name="f", metrics={}, storage_key="f")
    )
    assert repo.best(job.id) is None
    assert repo.mark_best(job.id, 1) and repo.best(job.id).round == 1
    assert not repo.mark_best(job.id, 1)  # already best: nothing changed, no second "new best" event
    assert repo.mark_best(job.id, 3) and repo.best(job.id).round == 3 and not repo.best(job.id).final
    marked = [c.round for c in session.query(Checkpoint).filter_by(job_id=job.id) if c.metrics.get("best")]
    assert marked == [3] and repo.best(job.id).metrics == {"loss": 0.5, "best": True}

    metrics = Metrics(session)
    metrics.put(job.id, "eval", {"pass@1": 0.1}, phase="before", step=0, round=0)
    for r in (1, 2, 3):  # the periodic evaluations recur: one row each, a retried write replaces its own
        metrics.put(job.id, "eval", {"pass@1": r / 10}, phase="interval", step=2 * r, round=r)
    metrics.put(job.id, "eval", {"pass@1": 0.25}, phase="interval", step=4, round=2)
    assert [m.values["pass@1"] for m in metrics.query(job.id, kind="eval")] == [0.1, 0.1, 0.3, 0.25]
    metrics.drop_from_round(job.id, 2)  # resumed from the checkpoint of round 2: its evaluation is kept
    assert [(m.phase, m.round) for m in metrics.query(job.id, kind="eval")] == [
        ("before", 0),
        ("interval", 1),
        ("interval", 2),
    ]


def make_preflight(s, deadline_in: float) -> Preflight:
    key, _ = Keys(s).create("alpha")
    row = Preflight(
        project_id=key.project_id,
        model="tiny-random",
        training_file="file-x",
        config={},
        queue="cpu",
        prompts=2,
        timeout_s=60,
        status="queued",
        deadline=time.time() + deadline_in,
    )
    return Preflights(s).add(row)


def test_a_preflight_starts_once_before_its_deadline_and_finishes_once(session):
    row = make_preflight(session, 60)
    assert Preflights(session).start(row.id) and not Preflights(session).start(row.id)  # a second delivery
    assert Preflights(session).succeed(row.id, {"samples": 4})
    assert not Preflights(session).fail(row.id, {"message": "late"})  # succeeded stays succeeded
    session.refresh(row)
    assert (row.status, row.report, row.error) == ("succeeded", {"samples": 4}, None)
    assert session.scalar(select(func.count()).select_from(Job)) == 0  # no job row


def test_a_preflight_past_its_deadline_never_starts_and_expires_after_the_grace(session):
    late = make_preflight(session, -5)
    assert not Preflights(session).start(late.id)
    assert not Preflights(session).expire(late.id, grace_s=60)  # still within the grace
    assert Preflights(session).expire(late.id, grace_s=1)
    session.refresh(late)
    assert (
        late.status == "failed"
        and late.error["code"] == "preflight_timeout"
        and late.error["param"] == "timeout_s"
    )
    assert not Preflights(session).succeed(
        late.id, {"samples": 4}
    )  # a worker that finishes after it changes nothing
