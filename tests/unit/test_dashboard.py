"""Dashboard pages over a real SQLite store (rows written through the repositories): sign-in,
project isolation, the actions' errors, and the pure progress / health / series functions."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest

from api.dashboard import views
from rapid_core.config import make_config
from store.models import Job
from store.repos import Jobs, Keys, Metrics

CONFIG = make_config(
    model="tiny-random", rounds=4, prompts_per_round=2, group_size=2, mini_batch_size=2
).model_dump()


def add_job(client, project: str, status: str, rounds_done: int = 0) -> str:
    """A job of ``project`` with ``rounds_done`` rounds of step and round metrics."""
    with client.app.state.runtime.sessions() as s:
        project_id = Keys(s).create(project)[0].project_id
        job = Jobs(s).add(
            Job(
                project_id=project_id,
                model="tiny-random",
                training_file="file-x",
                seed=0,
                method={"grader": {"type": "numeric"}, "hyperparameters": {}},
                config=CONFIG,
                queue="cpu",
                status=status,
                started_at=1000,
            )
        )
        Metrics(s).put(
            job.id, "eval", {"pass@1": 0.25, "problems": 4, "seconds": 30.0}, phase="before", step=0
        )
        for k in range(rounds_done):
            for u in (1, 2):
                Metrics(s).put(
                    job.id,
                    "step",
                    {"loss": 0.1, "grad_norm": 1.0, "ess": 0.95, "clip_frac": 0.0},
                    step=2 * k + u,
                    round=k,
                )
            Metrics(s).put(
                job.id,
                "round",
                {
                    "reward_mean": 0.1 * k,
                    "accuracy": 0.5,
                    "frac_zero_std": 0.25,
                    "round_s": 10.0,
                    "staleness_mean": 0.5,
                    "staleness_max": 1,
                },
                step=2 * k + 2,
                round=k,
            )
        s.commit()
        return job.id


@pytest.fixture
def browser(api_client):
    """The API test client as a browser: a cookie jar and no Authorization header."""
    key = api_client.headers.pop("Authorization").split()[1]
    api_client.follow_redirects = False
    return api_client, key


def sign_in(client, key: str):
    return client.post("/dashboard/login", data={"key": key, "next": "/dashboard/jobs"})


def test_pages_need_a_signed_in_key_and_the_cookie_keeps_it_from_scripts_and_urls(browser):
    client, key = browser
    response = client.get("/dashboard/jobs/ftjob-x")
    assert (
        response.status_code == 303
        and response.headers["location"] == "/dashboard/login?next=/dashboard/jobs/ftjob-x"
    )
    assert client.post("/dashboard/login", data={"key": "rk-wrong"}).status_code == 401
    response = sign_in(client, key)
    assert response.status_code == 303 and response.headers["location"] == "/dashboard/jobs"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/dashboard" in cookie
    assert key not in response.headers["location"]
    page = client.get("/dashboard/jobs")
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    assert client.post("/dashboard/logout").status_code == 303
    assert client.get("/dashboard/jobs").status_code == 303


def test_login_goes_back_only_to_a_dashboard_page(browser):
    client, key = browser
    for target, want in [
        ("/dashboard/jobs/ftjob-1", "/dashboard/jobs/ftjob-1"),
        ("https://evil.example/", "/dashboard/jobs"),
        ("//evil.example/dashboard/", "/dashboard/jobs"),
    ]:
        response = client.post("/dashboard/login", data={"key": key, "next": target})
        assert response.headers["location"] == want


def test_a_project_sees_only_its_own_jobs(browser):
    client, key = browser
    mine = add_job(client, "p", "running", rounds_done=2)
    theirs = add_job(client, "other", "succeeded", rounds_done=4)
    sign_in(client, key)
    listing = client.get("/dashboard/jobs").text
    assert mine in listing and theirs not in listing
    assert re.search(r"<progress value=\"2\" max=\"4\">", listing)
    for path in (f"/dashboard/jobs/{theirs}", f"/dashboard/jobs/{theirs}/checkpoints/ftckpt-x/adapter"):
        assert client.get(path).status_code == 404
    assert client.post(f"/dashboard/jobs/{theirs}/cancel").status_code == 404
    with client.app.state.runtime.sessions() as s:
        assert Jobs(s).by_id(theirs).status == "succeeded"


def test_job_page_embeds_the_series_and_refuses_cross_site_and_invalid_actions(browser):
    client, key = browser
    job_id = add_job(client, "p", "succeeded", rounds_done=3)
    sign_in(client, key)
    page = client.get(f"/dashboard/jobs/{job_id}").text
    data = json.loads(
        re.search(r'<script type="application/json" id="charts-data"[^>]*>(.*?)</script>', page, re.S)[1]
    )
    assert {p["id"] for p in data["plots"]} == {p["id"] for p in views.PLOTS}
    assert data["data"]["round"]["x"] == [0, 1, 2] and data["data"]["step"]["x"] == [1, 2, 3, 4, 5, 6]
    assert data["data"]["eval"]["pass@1"] == [0.25]
    assert (
        client.post(
            f"/dashboard/jobs/{job_id}/cancel", headers={"Origin": "https://evil.example"}
        ).status_code
        == 403
    )
    refused = client.post(f"/dashboard/jobs/{job_id}/cancel")
    assert refused.status_code == 400 and "has already succeeded" in refused.text


def test_progress_eta_counts_the_remaining_rounds_and_the_final_evaluation():
    job = SimpleNamespace(config=CONFIG, status="running", started_at=1000, finished_at=None)
    rounds = [{"round": k, "round_s": 10.0} for k in range(3)]
    p = views.progress(job, rounds, {"before": {"seconds": 30.0}}, now=1100)
    assert (p.rounds_done, p.total_rounds, p.fraction, p.elapsed_s, p.eta_s) == (3, 4, 0.75, 100.0, 40.0)
    done = SimpleNamespace(config=CONFIG, status="succeeded", started_at=1000, finished_at=1200)
    assert views.progress(done, rounds, {}, now=5000).eta_s is None
    assert (
        views.total_rounds({**CONFIG, "rounds": None, "max_samples": 10, "time_budget_s": 60}) == 3
    )  # 4 a round


def test_health_names_a_grader_with_no_signal_and_drifting_weights():
    quiet = [{"round": k, "frac_zero_std": 0.2, "truncated_share": 0.0} for k in range(3)]
    assert (
        views.health(quiet, [{"round": 2, "loss": 0.1, "grad_norm": 1.0, "ess": 0.9, "clip_frac": 0.0}]) == []
    )
    flat = [{"round": k, "frac_zero_std": 0.95, "grader_status": {"timeout": 2}} for k in range(3)]
    steps = [{"round": 2, "loss": None, "grad_norm": None, "ess": 0.3, "clip_frac": 0.4}]
    messages = " | ".join(m for _, m in views.health(flat, steps))
    for part in (
        "non-finite",
        "95% of groups have identical rewards",
        "failed on 6 samples",
        "40% of importance",
        "Effective sample size is 0.30",
    ):
        assert part in messages


def test_series_leave_gaps_for_missing_values():
    out = views.series(
        [{"round": 0, "reward_mean": float("nan")}], [], {"after": {"pass@1": 0.5, "pass@4": 0.7}}, 8
    )
    assert out["round"]["reward_mean"] == [None] and out["eval"] == {
        "x": [8],
        "pass@1": [0.5],
        "pass@k": [0.7],
        "k_label": "pass@4",
    }


def test_eval_series_has_the_interval_evaluations_at_their_steps():
    interval = [{"step": 4, "pass@1": 0.25, "pass@2": 0.5}, {"step": 8, "pass@1": 0.5, "pass@2": 0.75}]
    evals = {"before": {"pass@1": 0.0, "pass@2": 0.25}, "after": {"pass@1": 0.5, "pass@2": 0.75}}
    out = views.series([], [], evals, 8, interval)
    assert out["eval"] == {
        "x": [0, 4, 8, 8],
        "pass@1": [0.0, 0.25, 0.5, 0.5],
        "pass@k": [0.25, 0.5, 0.75, 0.75],
        "k_label": "pass@2",
    }
