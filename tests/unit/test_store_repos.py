"""Repositories on a real (SQLite) store built by the migrations: keys, paging, the job lease."""

from __future__ import annotations

import time

import pytest

from store.db import make_engine, make_sessionmaker
from store.migrate import upgrade
from store.models import Job
from store.repos import Events, Jobs, Keys, hash_key
from store.settings import Settings


@pytest.fixture
def session(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url)
    with make_sessionmaker(make_engine(Settings(database_url=url)))() as s:
        yield s


def make_job(s, project_id: str) -> Job:
    job = Job(project_id=project_id, model="tiny-random", training_file="file-x", method={"grader": {}},
              config={}, queue="cpu")  # fmt: skip
    return Jobs(s).add(job)


def test_api_keys_are_stored_hashed_and_resolve_to_their_project(session):
    key, secret = Keys(session).create("alpha")
    session.commit()
    assert key.key_hash == hash_key(secret) and secret not in key.key_hash
    assert Keys(session).project_of(secret) == key.project_id
    assert Keys(session).project_of(secret + "x") is None
    _, second = Keys(session).create("alpha")
    assert Keys(session).project_of(second) == key.project_id  # same project, second key


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
    assert jobs.orphaned() == [job.id]  # w1 stopped renewing: it is gone
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
