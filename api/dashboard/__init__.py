"""A web dashboard served by the API under /dashboard: a project's jobs, and one job's live plots,
health checks, events, checkpoints and cancel / pause / resume buttons.

Server-rendered Jinja2 pages; the plots are drawn in the browser by uPlot, vendored from its npm
package into static/vendor/ (with its license). Routes are thin: they read through the job services
and the store's repositories, scoped to the project of the API key the user signed in with.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from fastapi.staticfiles import StaticFiles

from api.dashboard import auth
from api.dashboard.routes import HERE, login_redirect, router


def mount(app: FastAPI) -> None:
    """Add the dashboard's pages and static files to the API app."""
    app.include_router(router)
    app.mount(f"{auth.PATH}/static", StaticFiles(directory=HERE / "static"), name="dashboard-static")

    @app.exception_handler(auth.LoginRequired)
    async def _login(request: Request, _: auth.LoginRequired):
        return login_redirect(request)

    @app.exception_handler(auth.CrossOrigin)
    async def _cross_origin(_: Request, __: auth.CrossOrigin):
        return PlainTextResponse("Cross-origin form posts are refused", status_code=403)
