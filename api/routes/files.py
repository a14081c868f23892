"""/v1/files: upload (multipart, purpose fine-tune), list, retrieve, content, delete."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Header, Query, UploadFile
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from api.deps import Runtime, project_id, runtime, session
from api.schemas import file_object, page
from api.services import files

router = APIRouter(prefix="/v1/files", tags=["files"])


@router.post("")
def create_file(
    file: UploadFile, purpose: str = Form(...), rt: Runtime = Depends(runtime),
    s: Session = Depends(session), project: str = Depends(project_id),
    idempotency_key: str | None = Header(None, alias="Idempotency-Key", min_length=1, max_length=255),
) -> dict:  # fmt: skip
    created = files.create_file(s, rt.artifacts, rt.settings, project, file.file, file.filename or "upload.jsonl",
                                purpose, idempotency_key)  # fmt: skip
    return file_object(created)


@router.get("")
def list_files(
    after: str | None = None, limit: int = Query(100, ge=1, le=10000),
    s: Session = Depends(session), project: str = Depends(project_id),
) -> dict:  # fmt: skip
    items, more = files.list_files(s, project, after, limit)
    return page([file_object(f) for f in items], more)


@router.get("/{file_id}")
def retrieve_file(file_id: str, s: Session = Depends(session), project: str = Depends(project_id)) -> dict:
    return file_object(files.get_file(s, project, file_id))


@router.get("/{file_id}/content")
def file_content(
    file_id: str, rt: Runtime = Depends(runtime), s: Session = Depends(session), project: str = Depends(project_id)
) -> StreamingResponse:
    f = files.get_file(s, project, file_id)
    return StreamingResponse(rt.artifacts.open(f.storage_key), media_type="application/jsonl")


@router.delete("/{file_id}")
def delete_file(
    file_id: str, rt: Runtime = Depends(runtime), s: Session = Depends(session), project: str = Depends(project_id)
) -> dict:
    f = files.delete_file(s, rt.artifacts, project, file_id)
    return {"id": f.id, "object": "file", "deleted": True}
