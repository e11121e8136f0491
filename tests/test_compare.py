"""Comparing runs on a page and in the API: what is shown (curves, only the settings that differ, final metrics,
throughput, duration, validation), the selection in the URL, the Runs page's way to pick runs, and every bad
selection answered with a clear error, never a 500 and never a word about a run the member may not see. The runs
are rows as the worker leaves them; tests/test_evaluation.py compares runs that really trained."""

from __future__ import annotations

import html
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from mtm.models import ApiToken
from projects.models import RunStatus, TrainingProject, TrainingRun
from projects.runs.charts.compare import compare_chart_svg
from projects.runs.compare import MAX_RUNS, CompareRefused, parse_selection, select_runs
from projects.runs.config import RunConfig
from tests.api_client import call, codes
from tests.clients import secure_client

pytestmark = pytest.mark.django_db


def _run(project: TrainingProject, user: User, hyper: dict, loss: float, evals: bool) -> TrainingRun:
    config = RunConfig.of_project(project)
    config.hyperparameters.update(hyper)
    config.dataset_rows = 40
    started = timezone.now() - timedelta(minutes=3)
    metrics = [{"step": step, "loss": loss - step / 10, "learning_rate": 1e-3} for step in (2, 4, 6, 8)]
    if evals:
        metrics += [{"step": 4, "eval_loss": loss - 0.1, "perplexity": 9.0}, {"step": 8, "eval_loss": loss - 0.5}]
    return TrainingRun.objects.create(
        project=project,
        started_by=user,
        status=RunStatus.SUCCEEDED,
        config=config.model_dump(),
        metrics=metrics,
        summary={"global_step": 8, "final_loss": loss - 0.8, "tokens_per_second": 1234.6, "result_step": 8},
        validation={"passed": True, "checks": [{"name": "files", "passed": True, "detail": "ok"}]},
        started_at=started,
        finished_at=started + timedelta(seconds=125),
    )


@pytest.fixture
def runs(portal_roots):
    alice = User.objects.create_user("alice", password="alice-pass-1234")
    bob = User.objects.create_user("bob", password="bob-pass-1234")
    made = []
    for name, owner, hyper, evals in (
        ("alpha", alice, {"learning_rate": 0.001, "eval_fraction": 0.1}, True),
        ("beta", bob, {"learning_rate": 0.0005}, False),
        ("gamma", bob, {"learning_rate": 0.0005, "lora_r": 8}, False),
    ):
        project = TrainingProject.objects.create(
            name=name,
            owner=owner,
            model_name="test-org/tiny-llama",
            dataset_path=str(portal_roots / "datasets" / "qa.jsonl"),
            output_directory=str(portal_roots / "outputs" / name),
            hyperparameters=hyper,
        )
        made.append(_run(project, owner, hyper, 3.0 + len(made), evals))
    return alice, bob, made


def token_for(user: User) -> str:
    return ApiToken.issue(user, "tests")[1]


# --- the page --------------------------------------------------------------------------------------------------


def test_the_page_shows_curves_results_and_only_the_settings_that_differ(runs):
    alice, _, (a, b, _) = runs
    page = secure_client(alice).get(f"/projects/runs/compare/?runs={a.pk},{b.pk}")
    assert page.status_code == 200
    page_html = page.content.decode()
    assert 'aria-current="page">Runs</a>' in page_html and 'aria-current="page">Projects</a>' not in page_html
    # Other members' runs (b is bob's, of bob's project) compare like one's own: every member sees every project.
    assert f"#{a.pk} alpha" in page_html and f"#{b.pk} beta" in page_html
    chart = page_html[page_html.index('<svg class="loss-chart compare-chart"') : page_html.index("</svg>")]
    assert chart.count('<polyline class="series-0"') == 1 and chart.count('<polyline class="series-1"') == 1
    assert chart.count('<polyline class="series-0 series-eval"') == 1  # alpha's eval loss; beta has no eval set
    assert chart.count("<polyline") == 3
    diff = page_html[page_html.index('class="table compact compare-table compare-diff"') :]
    diff = diff[: diff.index("</table>")]
    assert "Learning rate" in diff and "0.001" in diff and "0.0005" in diff
    assert "Eval set (share of the rows)" in diff
    assert "Max steps" not in diff and "Base model" not in diff  # the same for both: not listed
    results = page_html[page_html.index("compare-results") :]
    assert "1235" in results and "2m 05s" in results and "passed" in results
    assert f"?runs={a.pk},{b.pk}" in page_html  # the link to this very comparison


def test_the_runs_page_offers_to_pick_runs_for_the_comparison(runs):
    alice, _, (a, b, c) = runs
    client = secure_client(alice)
    html = client.get("/projects/runs/").content.decode()
    assert '<form method="get" id="compare-form"' in html and 'action="/projects/runs/compare/"' in html
    for run in (a, b, c):
        assert f'name="runs" value="{run.pk}" form="compare-form"' in html
    # The ticked boxes arrive as runs=..&runs=..: the same comparison as runs=..,..
    picked = client.get(f"/projects/runs/compare/?runs={a.pk}&runs={c.pk}")
    assert picked.status_code == 200 and "LoRA r" in picked.content.decode()


def test_the_readme_shows_the_selection_the_runs_page_writes_and_both_forms_compare_the_same_runs(runs):
    from pathlib import Path
    from urllib.parse import urlencode

    alice, _, (a, b, _) = runs
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    # The Runs page's form is a GET of one checkbox named "runs" per ticked run, which a browser sends as below.
    written = urlencode([("runs", 12), ("runs", 15)])
    assert f"/projects/runs/compare/?{written}" in readme and f"GET /api/v1/runs/compare?{written}" in readme
    client, token = secure_client(alice), token_for(alice)
    for query in (urlencode([("runs", a.pk), ("runs", b.pk)]), f"runs={a.pk},{b.pk}"):
        page = client.get(f"/projects/runs/compare/?{query}")
        assert page.status_code == 200 and f"#{a.pk} alpha" in page.content.decode(), query
        api = call(secure_client(), "get", f"/runs/compare?{query}", token=token)
        assert [run["id"] for run in api.json()["runs"]] == [a.pk, b.pk], query


@pytest.mark.parametrize(
    ("query", "status", "says"),
    [
        ("", 422, "Compare needs 2 to 5 runs; no run was picked."),
        ("runs=A", 422, "'A' is not a run id"),
        ("runs=1,abc", 422, "'abc' is not a run id"),
        ("runs=-1,2", 422, "'-1' is not a run id"),
        ("runs=" + "9" * 30 + ",1", 422, "is not a run id"),
        ("runs=" + ",".join(["1"] * 150), 422, "The selection of runs is"),
    ],
)
def test_a_malformed_selection_is_refused_on_the_page(runs, query, status, says):
    alice = runs[0]
    page = secure_client(alice).get(f"/projects/runs/compare/?{query}")
    assert page.status_code == status
    text = html.unescape(page.content.decode())
    assert says in text and "Runs page" in text


def test_one_run_or_six_runs_are_refused_with_the_count(runs, portal_roots):
    alice, _, (a, b, c) = runs
    client = secure_client(alice)
    one = client.get(f"/projects/runs/compare/?runs={a.pk},{a.pk}")  # the same run twice is one run
    assert one.status_code == 422 and "Compare needs 2 to 5 runs; 1 run was picked." in one.content.decode()
    more = [_run(a.project, alice, {}, 2.0, False) for _ in range(3)]
    six = ",".join(str(run.pk) for run in (a, b, c, *more))
    page = client.get(f"/projects/runs/compare/?runs={six}")
    assert page.status_code == 422 and "6 runs were picked" in page.content.decode()
    api = call(secure_client(), "get", f"/runs/compare?runs={six}", token=token_for(alice))
    assert api.status_code == 422 and codes(api.json()["errors"]) == ["wrong_number_of_runs"]
    assert len(six.split(",")) == MAX_RUNS + 1


def test_an_unknown_run_is_named_and_the_known_one_is_not_described(runs):
    alice, _, (a, _, _) = runs
    missing = a.pk + 1000
    page = secure_client(alice).get(f"/projects/runs/compare/?runs={a.pk},{missing}")
    assert page.status_code == 404
    text = page.content.decode()
    assert f"No run #{missing} that you can see." in text
    assert "alpha" not in text  # nothing of the comparison is drawn from a partial selection
    body = call(secure_client(), "get", f"/runs/compare?runs={missing},{a.pk}", token=token_for(alice)).json()
    assert body["errors"][0]["code"] == "run_not_found" and body["errors"][0]["message"] == (
        f"No run #{missing} that you can see."
    )


def test_a_run_that_cannot_be_seen_reads_exactly_like_one_that_does_not_exist(runs):
    """A caller who may see no run learns nothing: the real run ids get the same answer as ids that never existed.
    Every active member sees every run, so the one such caller today is a deactivated account: its token is refused
    (401) before any lookup, and the comparison's own filter, asked for that account, reads real runs as missing."""
    alice, bob, (a, b, _) = runs
    token = token_for(bob)
    assert select_runs(bob, [a.pk, b.pk]) == [a, b]  # the ids are real ones bob could see while active
    bob.is_active = False
    bob.save()
    real = call(secure_client(), "get", f"/runs/compare?runs={a.pk},{b.pk}", token=token)
    ghost = call(secure_client(), "get", f"/runs/compare?runs={a.pk + 500},{b.pk + 500}", token=token)
    assert real.status_code == ghost.status_code == 401
    assert codes(real.json()["errors"]) == codes(ghost.json()["errors"]) == ["account_disabled"]
    assert real.content == ghost.content and "alpha" not in real.content.decode()

    refusals = []
    for ids in ([a.pk, b.pk], [a.pk + 500, b.pk + 500]):
        with pytest.raises(CompareRefused) as refused:
            select_runs(bob, ids)
        refusals.append(refused.value)
    masked = [
        r.problem.message.replace(str(first), "X").replace(str(second), "Y")
        for r, (first, second) in zip(refusals, ((a.pk, b.pk), (a.pk + 500, b.pk + 500)), strict=True)
    ]
    assert [r.status for r in refusals] == [404, 404] and masked[0] == masked[1] == "No run #X, #Y that you can see."
    assert refusals[0].problem.hint == refusals[1].problem.hint


def test_anonymous_callers_are_refused(runs):
    _, _, (a, b, _) = runs
    page = secure_client().get(f"/projects/runs/compare/?runs={a.pk},{b.pk}")
    assert page.status_code == 302 and "/login" in page["Location"]
    api = call(secure_client(), "get", f"/runs/compare?runs={a.pk},{b.pk}")
    assert api.status_code == 401 and "alpha" not in api.content.decode()


# --- the API -----------------------------------------------------------------------------------------------------


def test_the_api_answers_the_same_comparison(runs):
    alice, _, (a, b, c) = runs
    response = call(secure_client(), "get", f"/runs/compare?runs={c.pk},{a.pk}", token=token_for(alice))
    assert response.status_code == 200
    body = response.json()
    assert [run["id"] for run in body["runs"]] == [c.pk, a.pk]  # the order asked for
    gamma, alpha = body["runs"]
    assert alpha["eval_loss"] == pytest.approx(2.5) and alpha["best_eval_step"] == 8
    assert [p["step"] for p in alpha["eval_metrics"]] == [4, 8] and len(alpha["metrics"]) == 4
    assert gamma["eval_metrics"] == [] and gamma["tokens_per_second"] == 1234.6
    assert gamma["duration_seconds"] == pytest.approx(125) and gamma["validation"]["passed"] is True
    keys = {diff["key"]: diff["values"] for diff in body["differences"]}
    assert keys["learning_rate"] == ["0.0005", "0.001"] and keys["lora_r"] == ["8", "16"]
    assert "max_steps" not in keys and body["same_settings"] > 10
    spec = call(secure_client(), "get", "/openapi.json").json()
    assert "/api/v1/runs/compare" in spec["paths"]


# --- the pieces ----------------------------------------------------------------------------------------------------


def test_selection_parsing_keeps_the_order_and_drops_repeats():
    assert parse_selection(["3,1", "3", " 2 "]) == [3, 1, 2]
    with pytest.raises(CompareRefused) as refused:
        parse_selection(["1,2,3,4,5,6"])
    assert refused.value.status == 422 and "6 runs were picked" in refused.value.problem.message


def test_the_overlaid_chart_escapes_labels_and_draws_each_curve():
    metrics = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}, {"step": 2, "eval_loss": 1.5}]
    svg = compare_chart_svg([("#1 <b>x</b>", metrics), ("#2 y", metrics[:2])])
    assert "<b>" not in svg and "&lt;b&gt;" in svg
    assert svg.count("<polyline") == 3
    assert compare_chart_svg([("#1", []), ("#2", [])]).count("None of these runs reported a loss.") == 1


def test_the_overlaid_charts_key_cuts_long_run_names_inside_the_chart_and_keeps_them_whole_in_a_tooltip():
    import re

    long = "#12 " + "customer-support-answers-in-german-" * 4
    metrics = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}, {"step": 2, "eval_loss": 1.5}]
    svg = compare_chart_svg([(long, metrics), ("#13 short", metrics)])
    legend = svg.split('<g class="legend">')[1]
    box = re.search(r'<rect class="legend-box" x="([\d.]+)" y="[\d.]+" width="([\d.]+)"', legend)
    assert float(box[1]) >= 0 and float(box[1]) + float(box[2]) <= 960  # inside the viewBox
    labels = re.findall(r'<text class="legend-label"[^>]*>([^<]*)</text>', legend)
    assert labels[0].endswith("… training loss") and labels[1].endswith("… eval loss") and labels[0].startswith("#12 ")
    assert all(len(label) * 6.5 <= float(box[2]) - 34 for label in labels), labels
    assert legend.count(f"<title>{long} training loss</title>") == 1
    assert "#13 short training loss</text>" in legend and "<title>#13" not in legend


def test_the_overlaid_chart_draws_the_axes_the_run_page_draws():
    import re

    from projects.runs.charts.loss import loss_chart_svg

    metrics = [{"step": s, "loss": 3.0 - s * 0.1} for s in range(1, 21)] + [{"step": 20, "eval_loss": 1.2}]

    def axes(svg: str) -> list[str]:
        return re.findall(r'<(?:line class="(?:axis|grid|tick-mark)"|text class="(?:tick|axis-label)")[^>]*>[^<]*', svg)

    assert axes(compare_chart_svg([("#1", metrics)])) == axes(loss_chart_svg(metrics))
