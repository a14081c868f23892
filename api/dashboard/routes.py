"""The dashboard's pages: thin routes over the job services, rendered with Jinja2 templates."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from api.dashboard import auth, service, views
from api.deps import Runtime, runtime, session
from api.errors import ApiError
from api.services import jobs

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["duration"] = views.duration
templates.env.filters["when"] = lambda t: (
    dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") if t else "–"
)
templates.env.filters["num"] = lambda v, f=".3f": format(v, f) if isinstance(v, int | float) else "–"
# Pages load only their own scripts and styles; uPlot styles its elements through the DOM.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)

router = APIRouter(prefix=auth.PATH, include_in_schema=False)
Session_ = Depends(session)
Project = Depends(auth.dashboard_project)


def render(request: Request, name: str, context: dict, status: int = 200) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, context, status_code=status)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Cache-Control"] = "no-store"
    return response


def login_redirect(request: Request) -> RedirectResponse:
    target = f"{auth.PATH}/login?next={quote(request.url.path)}"
    return RedirectResponse(target, status_code=303)


@router.get("")
def home() -> RedirectResponse:
    return RedirectResponse(f"{auth.PATH}/jobs", status_code=303)


@router.get("/login")
def login_form(request: Request, next: str | None = None) -> HTMLResponse:
    return render(request, "login.html", {"next": auth.safe_next(next), "error": None})


@router.post("/login", dependencies=[Depends(auth.same_origin)])
def login(request: Request, key: str = Form(""), next: str = Form(""), s: Session = Session_) -> Response:
    if auth.project_of_key(s, key) is None:
        context = {"next": auth.safe_next(next), "error": "That API key is not valid."}
        return render(request, "login.html", context, status=401)
    response = RedirectResponse(auth.safe_next(next), status_code=303)
    auth.set_key_cookie(response, request, key)
    return response


@router.post("/logout", dependencies=[Depends(auth.same_origin)])
def logout() -> RedirectResponse:
    response = RedirectResponse(f"{auth.PATH}/login", status_code=303)
    auth.clear_key_cookie(response)
    return response


@router.get("/jobs")
def job_list(
    request: Request,
    after: str | None = None,
    limit: int = Query(50, ge=1, le=200),
    s: Session = Session_,
    project: str = Project,
) -> HTMLResponse:
    rows, more = service.job_rows(s, project, after, limit)
    live = any(r.job.status in ("queued", "running") for r in rows)
    return render(request, "jobs.html", {"rows": rows, "more": more, "live": live})


@router.get("/jobs/{job_id}")
def job_detail(request: Request, job_id: str, s: Session = Session_, project: str = Project) -> HTMLResponse:
    return _job_page(request, s, project, job_id)


def _job_page(
    request: Request, s: Session, project: str, job_id: str, error: str | None = None, status: int = 200
) -> HTMLResponse:
    try:
        page = service.job_page(s, project, job_id)
    except ApiError as err:
        return render(request, "not_found.html", {"message": err.message}, status=err.status)
    charts = {
        "plots": [{**p, "series": [list(x) for x in p["series"]]} for p in views.PLOTS],
        "data": page.series,
    }
    context = {
        "page": page,
        "job": page.job,
        "error": error,
        "charts": charts,
        "live": page.job.status in ("queued", "running"),
    }
    return render(request, "job.html", context, status=status)


@router.post("/jobs/{job_id}/{action}", dependencies=[Depends(auth.same_origin)])
def job_action(
    request: Request,
    job_id: str,
    action: Literal["cancel", "pause", "resume"],
    rt: Runtime = Depends(runtime),
    s: Session = Session_,
    project: str = Project,
) -> Response:
    try:
        if action == "cancel":
            jobs.cancel_job(s, project, job_id)
        elif action == "pause":
            jobs.pause_job(s, project, job_id)
        else:
            jobs.resume_job(s, project, job_id)
            jobs.deliver(rt, job_id)  # publish its outbox row now; a worker's sweep would otherwise
    except ApiError as err:
        s.rollback()
        return _job_page(request, s, project, job_id, error=err.message, status=err.status)
    return RedirectResponse(f"{auth.PATH}/jobs/{quote(job_id)}", status_code=303)


@router.get("/jobs/{job_id}/checkpoints/{checkpoint_id}/adapter")
def checkpoint_adapter(
    job_id: str,
    checkpoint_id: str,
    rt: Runtime = Depends(runtime),
    s: Session = Session_,
    project: str = Project,
) -> StreamingResponse:
    ckpt = jobs.get_checkpoint(s, project, job_id, checkpoint_id)
    name = f"{job_id}-{'final' if ckpt.final else f'round-{ckpt.round}'}-adapter.tar.gz"
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    return StreamingResponse(
        rt.artifacts.open(ckpt.storage_key), media_type="application/gzip", headers=headers
    )
