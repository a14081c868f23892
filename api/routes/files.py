"""/v1/files: upload (multipart, purpose fine-tune), list, retrieve, content, delete."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from api.deps import Runtime, project_id, runtime, session
from api.request_checks import StrictRoute
from api.routes import ERROR_RESPONSES
from api.schemas import FileDeleted, FileList, FileObject, file_object, id_page
from api.services import files

router = APIRouter(prefix="/v1/files", tags=["files"], route_class=StrictRoute, responses=ERROR_RESPONSES)


@router.post("", openapi_extra=files.UPLOAD_SCHEMA)
async def create_file(
    request: Request,
    rt: Runtime = Depends(runtime),
    s: Session = Depends(session),
    project: str = Depends(project_id),
    idempotency_key: str | None = Header(None, alias="Idempotency-Key", min_length=1, max_length=255),
) -> FileObject:
    """Multipart ``file`` and ``purpose``, read as they stream in (see ``files.receive_file``). A retry
    with the same Idempotency-Key and the same file returns the first upload."""
    return file_object(
        await files.receive_file(request, s, rt.artifacts, rt.settings, project, idempotency_key)
    )


@router.get("")
def list_files(
    after: str | None = None,
    limit: int = Query(10000, ge=1, le=10000),
    order: Literal["asc", "desc"] = "desc",
    purpose: str | None = Query(None, max_length=64, description="Only files of this purpose"),
    s: Session = Depends(session),
    project: str = Depends(project_id),
) -> FileList:
    if purpose is not None and purpose not in files.PURPOSES:  # every file here is a fine-tune file
        return FileList(data=[], first_id=None, last_id=None, has_more=False)
    items, more = files.list_files(s, project, after, limit, newest_first=order == "desc")
    return FileList(**id_page([file_object(f) for f in items], more))


@router.get("/{file_id}")
def retrieve_file(
    file_id: str, s: Session = Depends(session), project: str = Depends(project_id)
) -> FileObject:
    return file_object(files.get_file(s, project, file_id))


@router.get(
    "/{file_id}/content",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"application/jsonl": {"schema": {"type": "string"}}},
            "description": "The file's lines",
        }
    },
)
def file_content(
    file_id: str,
    rt: Runtime = Depends(runtime),
    s: Session = Depends(session),
    project: str = Depends(project_id),
) -> StreamingResponse:
    f = files.get_file(s, project, file_id)
    return StreamingResponse(rt.artifacts.open(f.storage_key), media_type="application/jsonl")


@router.delete("/{file_id}")
def delete_file(
    file_id: str,
    rt: Runtime = Depends(runtime),
    s: Session = Depends(session),
    project: str = Depends(project_id),
) -> FileDeleted:
    f = files.delete_file(s, rt.artifacts, project, file_id)
    return FileDeleted(id=f.id, deleted=True)
