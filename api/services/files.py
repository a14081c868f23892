"""Uploaded training files: size- and line-limited, each line a JSON object with ``messages``."""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from fastapi import Request
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from api import strict_json
from api.errors import IdempotencyKeyReused, InvalidRequest, NotFound, TooLarge
from store.artifacts import Artifacts
from store.models import File, new_id
from store.repos import Files, Jobs, UnknownCursor
from store.settings import Settings

PURPOSES = ("fine-tune",)
CHUNK = 1 << 20
# The upload's body as OpenAPI shows it (the route reads it itself, so FastAPI cannot infer it).
UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "purpose": {"type": "string", "enum": list(PURPOSES)},
                    },
                }
            }
        },
    }
}


def _spool(src: BinaryIO, dst: Path, limit: int) -> tuple[int, str]:
    """Copy the upload to ``dst``; returns its size and SHA-256."""
    size, digest = 0, hashlib.sha256()
    with dst.open("wb") as out:
        while chunk := src.read(CHUNK):
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"File is larger than the limit of {limit} bytes", "file", "file_too_large")
            out.write(chunk)
            digest.update(chunk)
    if size == 0:
        raise InvalidRequest("File is empty", "file", "empty_file")
    return size, digest.hexdigest()


def validate_jsonl(path: Path, max_lines: int) -> tuple[int, list[str]]:
    """Check every line; return (record count, fields present in every record)."""
    count, common = 0, None
    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            count += 1
            if count > max_lines:
                raise InvalidRequest(
                    f"File has more than the limit of {max_lines} lines", "file", "too_many_lines"
                )
            try:
                row = strict_json.loads(raw)
            except strict_json.JsonError as err:
                where = f" at {err.path}" if err.path else ""
                raise InvalidRequest(
                    f"Line {n} is not valid JSON{where}: {err.message}", "file", "invalid_jsonl"
                ) from None
            if not isinstance(row, dict):
                raise InvalidRequest(f"Line {n} is not a JSON object", "file", "invalid_jsonl")
            messages = row.get("messages")
            if (
                not isinstance(messages, list)
                or not messages
                or not all(
                    isinstance(m, dict) and isinstance(m.get("role"), str) and "content" in m
                    for m in messages
                )
            ):
                raise InvalidRequest(
                    f"Line {n}: 'messages' must be a non-empty list of {{role, content}} objects",
                    "file",
                    "invalid_jsonl",
                )
            common = set(row) if common is None else common & set(row)
    if count == 0:
        raise InvalidRequest("File has no records", "file", "empty_file")
    return count, sorted(common or ())


async def receive_file(
    request: Request,
    s: Session,
    store: Artifacts,
    settings: Settings,
    project_id: str,
    idempotency_key: str | None = None,
) -> File:
    """Parse the multipart body as it arrives, then check and store the file on a worker thread.

    Starlette spools the part to an unnamed temporary file (nothing is left behind if the upload
    breaks off); ``RequestGuard`` has already cut the stream at the size limit with a 413. Parsing
    here, not in a FastAPI ``UploadFile`` parameter, lets a full disk reach the 507 handler instead
    of turning into "error parsing the body"."""
    async with request.form(max_files=1, max_fields=8) as form:
        upload, purpose = form.get("file"), form.get("purpose")
        if not isinstance(upload, UploadFile):
            raise InvalidRequest("Missing the 'file' part of the multipart body", "file", "missing_file")
        if not isinstance(purpose, str):
            raise InvalidRequest(
                "Missing the 'purpose' field of the multipart body", "purpose", "missing_purpose"
            )
        filename = upload.filename or "upload.jsonl"
        return await run_in_threadpool(
            create_file, s, store, settings, project_id, upload.file, filename, purpose, idempotency_key
        )


def _earlier(s: Session, project_id: str, key: str, digest: str) -> File | None:
    file = Files(s).by_idempotency_key(project_id, key)
    if file is not None and file.request_hash != digest:
        raise IdempotencyKeyReused(
            f"Idempotency-Key {key!r} was used for a different upload (file {file.id})"
        )
    return file


def create_file(
    s: Session,
    store: Artifacts,
    settings: Settings,
    project_id: str,
    src: BinaryIO,
    filename: str,
    purpose: str,
    idempotency_key: str | None = None,
) -> File:
    """Check and store an upload: the artifact first, then its row, so a row never names a missing file.
    A retry with the same ``idempotency_key``, content, name and purpose returns the first upload."""
    if "\x00" in filename:
        raise InvalidRequest("The file name must not contain NUL characters", "file", "invalid_filename")
    if purpose not in PURPOSES:
        raise InvalidRequest(f"Unsupported purpose {purpose!r}; supported: {', '.join(PURPOSES)}", "purpose")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "upload.jsonl"
        size, content_hash = _spool(src, path, settings.max_file_bytes)
        digest = hashlib.sha256(f"{content_hash}:{purpose}:{filename}".encode()).hexdigest()
        if idempotency_key and (earlier := _earlier(s, project_id, idempotency_key, digest)):
            return earlier
        lines, fields = validate_jsonl(path, settings.max_file_lines)
        file_id = new_id("file")
        file = File(
            id=file_id,
            project_id=project_id,
            filename=filename[:255],
            purpose=purpose,
            bytes=size,
            lines=lines,
            fields=fields,
            storage_key=f"files/{file_id}.jsonl",
            idempotency_key=idempotency_key,
            request_hash=digest if idempotency_key else None,
        )
        # Stored before the row, which is committed at once: no database transaction stays open
        # while the bytes are copied, and a row never points at a missing file.
        store.put_file(file.storage_key, path)
    try:
        Files(s).add(file)
        s.commit()
    except BaseException as err:
        s.rollback()
        store.delete(file.storage_key)
        if (
            isinstance(err, IntegrityError)
            and idempotency_key
            and (earlier := _earlier(s, project_id, idempotency_key, digest))
        ):
            return earlier  # a concurrent retry with the same key won
        raise
    return file


def list_files(
    s: Session, project_id: str, after: str | None, limit: int, newest_first: bool = True
) -> tuple[list[File], bool]:
    try:
        return Files(s).page(project_id, after, limit, newest_first)
    except UnknownCursor:
        raise NotFound("file", after or "", "after") from None


def read_records(store: Artifacts, file: File) -> Iterator[dict[str, Any]]:
    """The file's records in order; upload checked that every non-blank line is a JSON object."""
    with store.open(file.storage_key) as f:
        for raw in f:
            if raw.strip():
                yield json.loads(raw)


def get_file(s: Session, project_id: str, file_id: str, param: str = "file_id") -> File:
    file = Files(s).get(project_id, file_id)
    if file is None:
        raise NotFound("file", file_id, param)
    return file


def delete_file(s: Session, store: Artifacts, project_id: str, file_id: str) -> File:
    file = get_file(s, project_id, file_id)
    in_use = Jobs(s).using_file(file.id)
    if in_use:
        raise InvalidRequest(
            f"File {file.id} is used by job {in_use}, which has not finished", "file_id", "file_in_use"
        )
    Files(s).delete(file)
    s.commit()
    store.delete(file.storage_key)
    return file
