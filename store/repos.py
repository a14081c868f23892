"""Repositories: the SQL of the service. Each takes a session and never commits."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Text, and_, cast, delete, exists, func, or_, select, update
from sqlalchemy.orm import Session

from store.models import (
    TERMINAL,
    ApiKey,
    Checkpoint,
    Event,
    File,
    Job,
    Metric,
    Outbox,
    Preflight,
    Project,
    now,
)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class UnknownCursor(LookupError):
    """A page's ``after`` is not the id of an object in that list."""


def _page(session: Session, model, where: Any, after: str | None, limit: int, newest_first=True):
    """Cursor page over ``model`` filtered by ``where``; returns (items, has_more). An ``after`` that
    is not in the filtered list raises UnknownCursor (never the first page again)."""
    q = select(model).where(where)
    if after is not None:
        cursor = session.scalar(select(model.seq).where(model.id == after, where))
        if cursor is None:
            raise UnknownCursor(after)
        q = q.where(model.seq < cursor if newest_first else model.seq > cursor)
    q = q.order_by(model.seq.desc() if newest_first else model.seq.asc()).limit(limit + 1)
    rows = list(session.scalars(q))
    return rows[:limit], len(rows) > limit


class Keys:
    def __init__(self, session: Session):
        self.s = session

    def create(self, project_name: str) -> tuple[ApiKey, str]:
        """A new key for the project (created if missing); returns the row and the one-time secret."""
        project = self.s.scalar(select(Project).where(Project.name == project_name))
        if project is None:
            project = Project(name=project_name)
            self.s.add(project)
            self.s.flush()
        secret = "rk-" + secrets.token_urlsafe(32)
        key = ApiKey(project_id=project.id, key_hash=hash_key(secret), prefix=secret[:10])
        self.s.add(key)
        self.s.flush()
        return key, secret

    def project_of(self, secret: str) -> str | None:
        return self.s.scalar(
            select(ApiKey.project_id).where(ApiKey.key_hash == hash_key(secret), ApiKey.revoked_at.is_(None))
        )

    def all(self, project_name: str | None = None) -> list[tuple[ApiKey, str]]:
        """Every key (revoked ones too) with its project's name, oldest first."""
        q = select(ApiKey, Project.name).join(Project, Project.id == ApiKey.project_id)
        if project_name is not None:
            q = q.where(Project.name == project_name)
        return [(key, name) for key, name in self.s.execute(q.order_by(ApiKey.created_ns, ApiKey.id))]

    def revoke(self, key_id: str) -> ApiKey | None:
        """Revoke a key: from the next request on it authenticates nothing. None if there is no such
        key; a key revoked before keeps its first ``revoked_at``."""
        key = self.s.get(ApiKey, key_id)
        if key is not None and key.revoked_at is None:
            key.revoked_at = now()
            self.s.flush()
        return key


class Files:
    def __init__(self, session: Session):
        self.s = session

    def add(self, file: File) -> File:
        self.s.add(file)
        self.s.flush()
        return file

    def get(self, project_id: str, file_id: str) -> File | None:
        return self.s.scalar(select(File).where(File.id == file_id, File.project_id == project_id))

    def by_id(self, file_id: str) -> File | None:
        return self.s.scalar(select(File).where(File.id == file_id))

    def by_idempotency_key(self, project_id: str, key: str) -> File | None:
        return self.s.scalar(select(File).where(File.project_id == project_id, File.idempotency_key == key))

    def page(
        self, project_id: str, after: str | None, limit: int, newest_first: bool = True
    ) -> tuple[list[File], bool]:
        return _page(self.s, File, File.project_id == project_id, after, limit, newest_first)

    def delete(self, file: File) -> None:
        self.s.delete(file)
        self.s.flush()


# Every status change a job can make: move -> (the statuses it may leave, the status it enters).
MOVES: dict[str, tuple[frozenset[str], str]] = {
    "start": (frozenset({"queued", "running"}), "running"),  # the lease holder runs it (again, after a crash)
    "requeue": (frozenset({"queued", "running"}), "queued"),  # its worker died: another one resumes it
    "succeed": (frozenset({"running"}), "succeeded"),
    "fail": (frozenset({"queued", "running"}), "failed"),
    "cancel": (frozenset({"validating_files", "queued", "running", "paused"}), "cancelled"),
    "pause": (frozenset({"queued", "running"}), "paused"),
    "resume": (frozenset({"paused"}), "queued"),
}


class Jobs:
    def __init__(self, session: Session):
        self.s = session

    def add(self, job: Job) -> Job:
        self.s.add(job)
        self.s.flush()
        return job

    def get(self, project_id: str, job_id: str) -> Job | None:
        return self.s.scalar(select(Job).where(Job.id == job_id, Job.project_id == project_id))

    def by_id(self, job_id: str) -> Job | None:
        return self.s.scalar(select(Job).where(Job.id == job_id))

    def by_idempotency_key(self, project_id: str, key: str) -> Job | None:
        return self.s.scalar(select(Job).where(Job.project_id == project_id, Job.idempotency_key == key))

    def page(
        self,
        project_id: str,
        after: str | None,
        limit: int,
        metadata: dict[str, str] | None = None,
        *,
        without_metadata: bool = False,
    ) -> tuple[list[Job], bool]:
        """Newest first; only jobs whose metadata has every key = value of ``metadata``, or (with
        ``without_metadata``) jobs that have none."""
        where = [Job.project_id == project_id]
        where += [self._meta_has(key, value) for key, value in (metadata or {}).items()]
        if without_metadata:
            where.append(or_(Job.meta.is_(None), cast(Job.meta, Text).in_(("null", "{}"))))
        return _page(self.s, Job, and_(*where), after, limit)

    def _meta_has(self, key: str, value: str) -> Any:
        if self.s.get_bind().dialect.name == "sqlite":  # a JSON path cannot quote every key there
            pairs = func.json_each(Job.meta).table_valued("key", "value")
            return exists(select(1).select_from(pairs).where(pairs.c.key == key, pairs.c.value == value))
        return Job.meta[key].as_string() == value

    def status(self, job_id: str) -> str | None:
        return self.s.scalar(select(Job.status).where(Job.id == job_id))

    def status_and_owner(self, job_id: str) -> tuple[str, str | None] | None:
        row = self.s.execute(select(Job.status, Job.lease_owner).where(Job.id == job_id)).first()
        return (row[0], row[1]) if row else None

    def move(
        self,
        job_id: str,
        move: str,
        *,
        when: Sequence[ColumnElement[bool]] = (),
        event: str | None = None,
        level: str = "info",
        **values: Any,
    ) -> bool:
        """The one door through which a job's status changes, for the API and the worker alike: a
        compare-and-set ``UPDATE jobs ... WHERE id = :id AND status IN (allowed) [AND when]``. True if
        this call won; only then is ``event`` written, in the same transaction, so a lost race leaves
        no trace and never overwrites the winner."""
        allowed, status = MOVES[move]
        if status in TERMINAL:
            values.setdefault("finished_at", now())
        result = self.s.execute(
            update(Job)
            .where(Job.id == job_id, Job.status.in_(allowed), *when)
            .values(status=status, **values),
            execution_options={"synchronize_session": False},  # loaded rows may be stale: re-read them
        )
        won = result.rowcount == 1
        if won and event:
            Events(self.s).add(job_id, event, level=level)
        return won

    def count_by_status(self) -> dict[str, int]:
        return dict(self.s.execute(select(Job.status, func.count()).group_by(Job.status)).all())

    def using_file(self, file_id: str) -> str | None:
        """A job that has not finished and reads the file, if any."""
        q = select(Job.id).where(
            or_(Job.training_file == file_id, Job.validation_file == file_id), Job.status.not_in(TERMINAL)
        )
        return self.s.scalar(q.limit(1))

    # --- the lease: one live worker runs a job; a dead worker's job is taken over ----------------
    def acquire_lease(self, job_id: str, owner: str, seconds: float) -> bool:
        t = time.time()
        result = self.s.execute(
            update(Job)
            .where(
                Job.id == job_id,
                Job.status.not_in(TERMINAL | {"paused"}),
                or_(Job.lease_owner.is_(None), Job.lease_owner == owner, Job.lease_expires_at < t),
            )
            .values(lease_owner=owner, lease_expires_at=t + seconds, attempts=Job.attempts + 1),
            execution_options={"synchronize_session": False},
        )
        return result.rowcount == 1

    def renew_lease(self, job_id: str, owner: str, seconds: float) -> bool:
        """Extend the lease if ``owner`` still holds it; False means another worker took the job over."""
        result = self.s.execute(
            update(Job)
            .where(Job.id == job_id, Job.lease_owner == owner)
            .values(lease_expires_at=time.time() + seconds),
            execution_options={"synchronize_session": False},
        )
        return result.rowcount == 1

    def release_lease(self, job_id: str, owner: str) -> None:
        self.s.execute(
            update(Job)
            .where(Job.id == job_id, Job.lease_owner == owner)
            .values(lease_owner=None, lease_expires_at=None),
            execution_options={"synchronize_session": False},
        )

    def orphaned(self) -> list[tuple[str, str]]:
        """(job id, owner) of jobs whose worker stopped renewing the lease: that worker is gone."""
        q = select(Job.id, Job.lease_owner).where(
            Job.status.in_(("queued", "running")),
            Job.lease_owner.is_not(None),
            Job.lease_expires_at < time.time(),
        )
        return [(row[0], row[1]) for row in self.s.execute(q)]

    def requeue_orphan(self, job_id: str, owner: str) -> bool:
        """Hand a dead worker's job to the queue again (with its message in the outbox)."""
        won = self.move(
            job_id,
            "requeue",
            when=[Job.lease_owner == owner, Job.lease_expires_at < time.time()],
            event=f"Worker {owner} stopped answering; job requeued to resume",
            level="warn",
            lease_owner=None,
            lease_expires_at=None,
        )
        if won:
            Outboxes(self.s).add(job_id, self.s.scalar(select(Job.queue).where(Job.id == job_id)))
        return won

    def waiting(self) -> list[str]:
        """Queued jobs no worker has taken and no outbox row will publish: their message must be in the broker."""
        pending = exists().where(Outbox.job_id == Job.id)
        q = select(Job.id).where(Job.status == "queued", Job.lease_owner.is_(None), ~pending)
        return list(self.s.scalars(q))


class Outboxes:
    """The transactional outbox: job messages to publish, written with the change that needs them."""

    def __init__(self, session: Session):
        self.s = session

    def add(self, job_id: str, queue: str) -> None:
        self.s.add(Outbox(job_id=job_id, queue=queue))
        self.s.flush()

    def pending(self, *, job_id: str | None = None, older_than: float = 0.0) -> list[Outbox]:
        q = select(Outbox).where(Outbox.created_at <= time.time() - older_than)
        if job_id is not None:
            q = q.where(Outbox.job_id == job_id)
        return list(self.s.scalars(q.order_by(Outbox.seq)))

    def done(self, seq: int) -> None:
        self.s.execute(delete(Outbox).where(Outbox.seq == seq))


class Events:
    def __init__(self, session: Session):
        self.s = session

    def add(self, job_id: str, message: str, *, level="info", type="message", data=None) -> Event:
        event = Event(job_id=job_id, message=message, level=level, type=type, data=data)
        self.s.add(event)
        self.s.flush()
        return event

    def page(self, job_id: str, after: str | None, limit: int) -> tuple[list[Event], bool]:
        return _page(self.s, Event, Event.job_id == job_id, after, limit)


class Metrics:
    def __init__(self, session: Session):
        self.s = session

    def put(
        self, job_id: str, kind: str, values: dict[str, Any], *, step=None, round=None, phase=None
    ) -> None:
        """Record one step (by step), round (by round) or eval (by phase and round: the periodic ones
        recur), replacing an earlier record of the same one: a retried or redone write leaves one row."""
        key = {
            "step": Metric.step == step,
            "round": Metric.round == round,
            "eval": and_(Metric.phase == phase, Metric.round == round),
        }[kind]
        self.s.execute(delete(Metric).where(Metric.job_id == job_id, Metric.kind == kind, key))
        self.s.add(Metric(job_id=job_id, kind=kind, values=values, step=step, round=round, phase=phase))

    def drop_from_round(self, job_id: str, round_index: int) -> None:
        """Forget step and round records of rounds a resumed run will do again, and the periodic
        evaluations after its checkpoint (the one at the checkpoint's boundary is part of it)."""
        redone = or_(
            and_(Metric.kind.in_(("step", "round")), Metric.round >= round_index),
            and_(Metric.kind == "eval", Metric.phase == "interval", Metric.round > round_index),
        )
        self.s.execute(delete(Metric).where(Metric.job_id == job_id, redone))

    def query(
        self, job_id: str, *, kind=None, step_min=None, step_max=None, limit: int = 1000
    ) -> list[Metric]:
        q = select(Metric).where(Metric.job_id == job_id)
        if kind is not None:
            q = q.where(Metric.kind == kind)
        if step_min is not None:
            q = q.where(Metric.step >= step_min)
        if step_max is not None:
            q = q.where(Metric.step <= step_max)
        return list(self.s.scalars(q.order_by(Metric.seq).limit(limit)))

    def last_step(self, job_id: str) -> Metric | None:
        q = select(Metric).where(Metric.job_id == job_id, Metric.kind == "step").order_by(Metric.seq.desc())
        return self.s.scalar(q.limit(1))


class Checkpoints:
    def __init__(self, session: Session):
        self.s = session

    def put(self, ckpt: Checkpoint) -> Checkpoint:
        """Record a checkpoint, replacing an earlier one of the same round (a resumed run redid it)."""
        self.s.execute(
            delete(Checkpoint).where(
                Checkpoint.job_id == ckpt.job_id,
                Checkpoint.round == ckpt.round,
                Checkpoint.final == ckpt.final,
            )
        )
        self.s.add(ckpt)
        self.s.flush()
        return ckpt

    def get(self, job_id: str, ckpt_id: str) -> Checkpoint | None:
        return self.s.scalar(select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.id == ckpt_id))

    def final(self, job_id: str) -> Checkpoint | None:
        q = (
            select(Checkpoint)
            .where(Checkpoint.job_id == job_id)
            .order_by(Checkpoint.final.desc(), Checkpoint.seq.desc())
        )
        return self.s.scalar(q.limit(1))

    def best(self, job_id: str) -> Checkpoint | None:
        """The checkpoint marked best (``metrics["best"]``) by the periodic held-out evaluations."""
        rows = self.s.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id, ~Checkpoint.final))
        return next((c for c in rows if c.metrics.get("best")), None)

    def mark_best(self, job_id: str, round_index: int) -> bool:
        """Mark the (not final) checkpoint of ``round_index`` best and no other; True if that changed."""
        changed = False
        for c in self.s.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id, ~Checkpoint.final)):
            best = c.round == round_index
            if bool(c.metrics.get("best")) != best:
                c.metrics = {
                    **{k: v for k, v in c.metrics.items() if k != "best"},
                    **({"best": True} if best else {}),
                }
                changed = changed or best
        self.s.flush()
        return changed

    def rounds(self, job_id: str) -> set[int]:
        """Rounds with a recorded (not final) checkpoint."""
        return set(
            self.s.scalars(select(Checkpoint.round).where(Checkpoint.job_id == job_id, ~Checkpoint.final))
        )

    def page(self, job_id: str, after: str | None, limit: int) -> tuple[list[Checkpoint], bool]:
        return _page(self.s, Checkpoint, Checkpoint.job_id == job_id, after, limit)


class Preflights:
    """Pre-flight runs. Their status moves queued -> running -> succeeded | failed by compare-and-set, so
    a second delivery of the message, or a worker that finishes after the deadline, changes nothing."""

    def __init__(self, session: Session):
        self.s = session

    def add(self, preflight: Preflight) -> Preflight:
        self.s.add(preflight)
        self.s.flush()
        return preflight

    def get(self, project_id: str, preflight_id: str) -> Preflight | None:
        return self.s.scalar(
            select(Preflight).where(Preflight.id == preflight_id, Preflight.project_id == project_id)
        )

    def by_id(self, preflight_id: str) -> Preflight | None:
        return self.s.scalar(select(Preflight).where(Preflight.id == preflight_id))

    def _move(
        self, preflight_id: str, allowed: tuple[str, ...], status: str, *when: Any, **values: Any
    ) -> bool:
        result = self.s.execute(
            update(Preflight)
            .where(Preflight.id == preflight_id, Preflight.status.in_(allowed), *when)
            .values(status=status, **values),
            execution_options={"synchronize_session": False},
        )
        return result.rowcount == 1

    def start(self, preflight_id: str) -> bool:
        """Queued -> running, unless its deadline has passed."""
        return self._move(
            preflight_id, ("queued",), "running", Preflight.deadline > time.time(), started_at=now()
        )

    def succeed(self, preflight_id: str, report: dict[str, Any]) -> bool:
        return self._move(preflight_id, ("running",), "succeeded", report=report, finished_at=now())

    def fail(self, preflight_id: str, error: dict[str, Any]) -> bool:
        return self._move(preflight_id, ("queued", "running"), "failed", error=error, finished_at=now())

    def expire(self, preflight_id: str, grace_s: float) -> bool:
        """Fail a pre-flight still unfinished ``grace_s`` past its deadline (no worker took it, or it died)."""
        error = {
            "code": "preflight_timeout",
            "param": "timeout_s",
            "message": "The pre-flight did not finish within timeout_s: no worker of its queue was free, "
            "or sampling and grading took longer",
        }
        return self._move(
            preflight_id,
            ("queued", "running"),
            "failed",
            Preflight.deadline + grace_s < time.time(),
            error=error,
            finished_at=now(),
        )
