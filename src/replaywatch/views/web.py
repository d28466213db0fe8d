"""``replaywatch serve``: a small read-only web view (Starlette, server-rendered Jinja2
templates; no build step).

Pages:
- ``/``: the recent comparisons, filtered by verdict and run;
- ``/runs/{run_id}``: one run's outcome, each step with its pair and verdict;
- ``/comparisons/{event_id}``: one comparison and its diff, rendered (``diff_view``);
- ``/stats``: comparisons by verdict over the last hour;
- ``/rates``: the fleet's cohorts, the most significant change in drift rate first, and
  the open alerts;
- ``/cohorts``: each cohort's flakiness (adaptive mode), and ``/cohorts/{cohort}``: one
  cohort's drift rate over time (an SVG chart), its alerts, the steps and paths that
  drift most, and, in adaptive mode, its envelope and the policy rule it suggests;
- ``/cohorts/{cohort}/comparisons?from=&to=``: the comparisons behind an alert.

It reads PostgreSQL (through a pool whose every transaction is read-only) and S3, and
never writes. Output events link their comparison's page when
``REPLAYWATCH_PUBLIC_URL`` names where this is served (``detail_url``).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from functools import partial
from typing import Any

import uvicorn
from jinja2 import DictLoader, Environment, select_autoescape
from starlette.applications import Starlette
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from replaywatch.envelope.volatility import by_cohort, suggest, toml_rule
from replaywatch.exceptions import CorruptDiff, NotFound, ReplaywatchError
from replaywatch.ports import DiffStore
from replaywatch.store.history import History
from replaywatch.views.diff_view import view
from replaywatch.views.rates import svg_chart
from replaywatch.views.show_diff import fetch
from replaywatch.views.web_access import LOOPBACK_NAMES, Access, guard

VERDICTS = ("within_tolerance", "drift", "tool_event_divergence", "attestation_divergence")
CSS_COLOURS = {"within_tolerance": "#1a7f37", "drift": "#9a6700", "tool_event_divergence": "#8250df",
               "attestation_divergence": "#cf222e"}  # fmt: skip

BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }} · replaywatch</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 0; color: #1f2328; }
header { background: #24292f; color: #fff; padding: 10px 24px; }
header a { color: #fff; margin-right: 18px; text-decoration: none; }
main { padding: 16px 24px; max-width: 1200px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #d0d7de; vertical-align: top; }
th { background: #f6f8fa; }
code, pre, .mono { font-family: ui-monospace, monospace; font-size: 13px; }
.verdict { font-weight: 600; white-space: nowrap; }
{% for v, c in colours.items() %}.v-{{ v }} { color: {{ c }}; }
{% endfor %}
.op-add, .op-unexpected { color: #1a7f37; } .op-remove, .op-missing { color: #cf222e; }
.op-replace, .op-change { color: #9a6700; } .op-move { color: #0969da; }
.before { background: #ffebe9; } .after { background: #dafbe1; }
tr.decided td { border-left: 3px solid #cf222e; font-weight: 600; } .graded { color: #57606a; font-size: 12px; }
form.filters { margin: 0 0 12px; } form.filters * { margin-right: 8px; }
</style></head>
<body><header><a href="/"><b>replaywatch</b></a><a href="/">comparisons</a><a href="/stats">last hour</a>
<a href="/rates">rates</a><a href="/cohorts">cohorts</a></header>
<main><h2>{{ title }}</h2>{% block content %}{% endblock %}</main></body></html>
"""

ROWS = """{% macro rows(comparisons, show_run=True) %}
<table><tr>{% if show_run %}<th>run</th>{% endif %}<th>step</th><th>pair</th><th>verdict</th><th>tokens Δ</th>
<th>detected</th><th></th></tr>
{% for c in comparisons %}<tr>
{% if show_run %}<td class="mono"><a href="/runs/{{ c.run_id | urlencode }}">{{ c.run_id }}</a></td>{% endif %}
<td class="mono">{{ c.step_id }}</td><td>{{ c.baseline_attempt }}→{{ c.current_attempt }}</td>
<td class="verdict v-{{ c.verdict }}">{{ c.verdict }}</td>
<td>{{ "" if c.token_delta is none else "%+g" | format(c.token_delta) }}</td>
<td>{{ c.detected_at.strftime("%Y-%m-%d %H:%M:%S") }}</td>
<td><a class="detail" href="/comparisons/{{ c.event_id }}">{{ "diff" if c.diff_sha256 else "details" }}</a></td>
</tr>{% endfor %}</table>
{% endmacro %}
{% macro pager(n, more, qs="") %}<p class="pager">
{% if n > 0 %}<a rel="prev" href="?{{ qs }}page={{ n - 1 }}">newer</a> {% endif %}
{% if more %}<a rel="next" href="?{{ qs }}page={{ n + 1 }}">more</a>{% endif %}</p>{% endmacro %}"""

INDEX = """{% extends "base.html" %}{% from "rows.html" import rows, pager %}{% block content %}
<form class="filters" method="get">
<select name="verdict"><option value="">every verdict</option>
{% for v in verdicts %}<option value="{{ v }}" {{ "selected" if v == verdict }}>{{ v }}</option>{% endfor %}</select>
<input name="run" placeholder="run id" value="{{ run or '' }}"><button type="submit">filter</button></form>
{% if comparisons %}{{ rows(comparisons) }}{% else %}<p>No comparisons match.</p>{% endif %}
{{ pager(n, more, {"verdict": verdict or "", "run": run or ""} | urlencode ~ "&") }}{% endblock %}"""

RUN = """{% extends "base.html" %}{% from "rows.html" import rows, pager %}{% block content %}
<table id="steps"><tr><th>step</th><th>pair</th><th>attempts seen</th><th>last status</th><th>verdict</th>
<th>comparisons</th></tr>
{% for s in steps %}<tr><td class="mono">{{ s.step_id }}</td>
<td>{% if s.current_attempt is none %}-{% else %}{{ s.base_attempt }}→{{ s.current_attempt }}{% endif %}</td>
<td>{{ s.max_attempt }}</td><td>{{ s.last_status or "" }}</td>
<td class="verdict v-{{ s.last_verdict or 'within_tolerance' }}">{% if s.current_attempt is none %}no snapshot
{% else %}{{ s.last_verdict or "within_tolerance" }}{% endif %}</td><td>{{ s.comparisons }}</td></tr>{% endfor %}
</table><h3>comparisons</h3>{{ rows(comparisons, show_run=False) }}
{{ pager(n, more) }}{% endblock %}"""

COMPARISON = """{% extends "base.html" %}{% block content %}
<p><a href="/runs/{{ c.run_id | urlencode }}">run {{ c.run_id }}</a> · step <code>{{ c.step_id }}</code> ·
attempts {{ c.baseline_attempt }}→{{ c.current_attempt }} ·
<span class="verdict v-{{ c.verdict }}">{{ c.verdict }}</span></p>
<p>tokens Δ {{ "-" if c.token_delta is none else "%+g" | format(c.token_delta) }} ·
cost Δ {{ "-" if c.cost_delta is none else "%+.6g" | format(c.cost_delta) }} ·
event <code>{{ c.event_id }}</code>
{% if c.settings_fingerprint %} · settings {{ c.settings_fingerprint }}{% endif %}</p>
{% if diff %}<h3 id="diff-title">{{ diff.title }}</h3><p class="mono">sha256 {{ c.diff_sha256 }}</p>
<table id="diff"><tr><th></th><th>where</th><th>before</th><th>after</th></tr>
{% for line in diff.lines %}<tr class="op-{{ line.kind }}{{ ' decided' if line.decided }}"><td>{{ line.kind }}</td>
<td class="mono">{{ line.label }}{% if line.graded %}<br><span class="graded">{{ line.graded }}</span>{% endif %}</td>
<td class="mono before">{{ line.before or "" }}</td><td class="mono after">{{ line.after or "" }}</td></tr>
{% endfor %}</table>
{% elif problem %}<p class="op-remove">{{ problem }}</p>
{% else %}<p>No diff:
{{ "within tolerance" if c.verdict == "within_tolerance" else "only tokens or cost drifted" }}.</p>
{% endif %}{% endblock %}"""

STATS = """{% extends "base.html" %}{% block content %}
<table id="counts"><tr><th>verdict</th><th>comparisons in the last hour</th></tr>
{% for v in verdicts %}<tr><td class="verdict v-{{ v }}">{{ v }}</td><td>{{ counts.get(v, 0) }}</td></tr>{% endfor %}
<tr><th>all</th><th>{{ counts.values() | sum }}</th></tr></table>
{% endblock %}"""

COHORTS = """{% extends "base.html" %}{% block content %}
{% if not rows %}<p>No envelopes yet: no policy is adaptive, or no comparison was made.</p>{% else %}
<table id="cohorts"><tr><th>cohort</th><th>partitions</th><th>re-runs seen</th><th>learned</th><th>flake rate</th>
<th>pass^{{ k }}</th><th>outside the envelope</th><th>varies most</th></tr>
{% for v in rows %}<tr><td class="mono"><a href="/cohorts/{{ v.cohort | urlencode }}">{{ v.cohort }}</a></td>
<td>{{ v.partitions }}</td><td>{{ v.envelope.seen }}</td><td>{{ v.envelope.learned }}</td>
<td>{{ "%.1f%%" % (100 * v.flake_rate) }}</td><td>{{ "%.2f" % v.pass_k(k) }}</td>
<td>{{ "%.1f%%" % (100 * v.alert_rate) }}</td>
<td class="mono">{% for p, r in v.top_paths(2) %}{{ p }} {{ "%.0f%%" % (100 * r) }}
{%- if not loop.last %}, {% endif %}{% endfor %}</td></tr>
{% endfor %}</table>{% endif %}{% endblock %}"""

RATES = """{% extends "base.html" %}{% block content %}
{% if alerts %}<h3>open alerts</h3><table id="alerts"><tr><th>since</th><th>cohort</th><th>rate</th>
<th>reference</th><th>compared with</th></tr>
{% for a in alerts %}<tr><td>{{ a.opened_ms | when }}</td>
<td class="mono"><a href="/cohorts/{{ a.cohort | urlencode }}">{{ a.cohort }}</a></td>
<td>{{ a.opened.rate | pct }}</td><td>{{ a.opened.reference_rate | pct }}</td>
<td>{% if a.opened.reference == "previous_version" %}version {{ a.opened.compared_with_version }} on
{{ a.opened.compared_kinds | join(", ") }}{% else %}its last {{ a.opened.reference_windows }} windows{% endif %}</td>
</tr>{% endfor %}</table>{% endif %}
{% if not rows %}<p>No window judged yet: windows are judged once the fleet's clock is past them.</p>{% else %}
<table id="rates"><tr><th>cohort</th><th>policy</th><th>comparisons</th><th>drift rate</th><th>reference</th>
<th>ratio</th><th>q-value</th><th>alert</th></tr>
{% for r in rows %}<tr class="{{ 'decided' if r.state.status == 'open' }}">
<td class="mono"><a href="/cohorts/{{ r.cohort | urlencode }}">{{ r.cohort }}</a></td><td>{{ r.policy }}</td>
<td>{{ r.last.comparisons or 0 }}</td><td>{{ r.last.rate | pct }}</td><td>{{ r.last.reference_rate | pct }}</td>
<td>{{ "-" if r.last.ratio is none else "%.2fx" % r.last.ratio }}</td>
<td>{{ "-" if r.last.q_value is none else "%.2g" % r.last.q_value }}</td><td>{{ r.state.status }}</td></tr>
{% endfor %}</table>{% endif %}{% endblock %}"""

COHORT = """{% extends "base.html" %}{% block content %}
{% if rate %}<p id="standing">Last window judged ({{ rate.last.window_start_ms | when }}):
{{ rate.last.comparisons }} comparisons, drift rate {{ rate.last.rate | pct }} against
{{ rate.last.reference_rate | pct }}{% if rate.last.reference == "previous_version" %} (version
{{ rate.last.compared_with_version }}){% endif %}; alert {{ rate.state.status }}.</p>{% endif %}
<p>Window: {% for w, label in widths %}<a href="?width={{ w }}">{{ label }}</a> {% endfor %}</p>
<div id="chart">{{ chart | safe }}</div>
<h3>alerts</h3>{% if alerts %}<table id="cohort-alerts"><tr><th>opened</th><th>resolved</th><th>rate</th>
<th>reference</th><th>q-value</th><th></th></tr>
{% for a in alerts %}<tr><td>{{ a.opened_ms | when }}</td>
<td>{{ "open" if a.resolved_ms is none else a.resolved_ms | when }}</td>
<td>{{ a.opened.rate | pct }}</td><td>{{ a.opened.reference_rate | pct }}</td><td>{{ "%.2g" % a.opened.q_value }}</td>
<td><a href="/cohorts/{{ cohort | urlencode }}/comparisons?policy={{ a.policy | urlencode -}}
&from={{ a.opened.window_start_ms }}&to={{ a.opened.window_end_ms }}&drifted=1">comparisons behind it</a></td></tr>
{% endfor %}</table>{% else %}<p>None.</p>{% endif %}
<h3>drifting most (last day)</h3>
<table id="drifting"><tr><th>step</th><th>drifted</th><th>path</th><th>drifted</th></tr>
{% for i in range([steps | length, paths | length] | max) %}<tr>
<td class="mono">{{ steps[i][0] if i < steps | length }}</td><td>{{ steps[i][1] if i < steps | length }}</td>
<td class="mono">{{ paths[i][0] if i < paths | length }}</td><td>{{ paths[i][1] if i < paths | length }}</td></tr>
{% endfor %}</table>
{% if v %}<h3>envelope</h3>
<p>{{ v.envelope.seen }} re-runs seen over {{ v.partitions }} partition(s), {{ v.envelope.learned }} learned from;
flake rate {{ "%.1f%%" % (100 * v.flake_rate) }}, pass^{{ k }} {{ "%.2f" % v.pass_k(k) }},
outside the envelope {{ "%.1f%%" % (100 * v.alert_rate) }}.
{% if v.envelope.action %}Last operator action: #{{ v.envelope.action }}
{%- if v.envelope.relearning %} (relearning){% endif %}.{% endif %}</p>
<table id="paths"><tr><th>path</th><th>differs in</th><th>set changes</th><th>shape changes</th></tr>
{% for p, r in v.top_paths(50, always=True) %}<tr><td class="mono">{{ p }}</td><td>{{ "%.1f%%" % (100 * r) }}</td>
<td>{{ v.envelope.paths[p].set_changes }}</td><td>{{ v.envelope.paths[p].shape_changes }}</td></tr>{% endfor %}
</table>
<p>Tools the cohort calls: {% for t in v.envelope.tools | sort %}<code>{{ t }}</code> {% else %}none{% endfor %}</p>
<h3>Suggested policy rule</h3>
<p>What would have kept this cohort's false alerts under {{ "%.0f%%" % (100 * target) }} on the re-runs seen:</p>
<pre id="suggested">{{ rule }}</pre>{% endif %}
{% endblock %}"""

BEHIND = """{% extends "base.html" %}{% from "rows.html" import rows %}{% block content %}
<p><a href="/cohorts/{{ cohort | urlencode }}">cohort {{ cohort }}</a> · attempts that occurred
{{ start | when }} to {{ end | when }}</p>
{% if comparisons %}{{ rows(comparisons) }}{% else %}<p>No comparisons.</p>{% endif %}{% endblock %}"""

templates = Environment(
    loader=DictLoader(
        {
            "base.html": BASE,
            "rows.html": ROWS,
            "index.html": INDEX,
            "run.html": RUN,
            "comparison.html": COMPARISON,
            "stats.html": STATS,
            "cohorts.html": COHORTS,
            "cohort.html": COHORT,
            "rates.html": RATES,
            "behind.html": BEHIND,
        }
    ),
    autoescape=select_autoescape(default=True),
)
templates.filters["pct"] = lambda x: "-" if x is None else f"{100 * x:.1f}%"
templates.filters["when"] = lambda ms: "-" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime(
    "%Y-%m-%d %H:%M")  # fmt: skip
WIDTHS = ((60_000, "1 min"), (300_000, "5 min"), (3_600_000, "1 h"))


def page(name: str, title: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = templates.get_template(name).render(title=title, colours=CSS_COLOURS, verdicts=VERDICTS, **context)
    return HTMLResponse(html, status_code=status)


PAGE = 200
"""Rows on one page of the web view (``?page=N`` for the next ones)."""


def page_of(request: Request) -> int:
    """The page a request asks for (0 for none, or one that is not a small number)."""
    text = request.query_params.get("page", "0")
    return int(text) if text.isdigit() and len(text) < 7 else 0


def create_app(store: History, diffs: DiffStore, access: Access | None = None) -> ASGIApp:
    """The web view over ``store`` (read-only) and ``diffs``, behind ``access``
    (default: open, for a view bound to loopback)."""
    access = access or Access("none", hosts=LOOPBACK_NAMES)

    async def index(request: Request) -> HTMLResponse:
        verdict = request.query_params.get("verdict") or None
        run = request.query_params.get("run") or None
        n = page_of(request)
        if verdict is not None and verdict not in VERDICTS:
            return page("index.html", "unknown verdict", 400, comparisons=[], verdict=None, run=run, n=0, more=False)
        comparisons = await store.recent_comparisons(verdict=verdict, run_id=run, limit=PAGE + 1, offset=n * PAGE)
        return page("index.html", "recent comparisons", comparisons=comparisons[:PAGE], verdict=verdict, run=run,
                    n=n, more=len(comparisons) > PAGE)  # fmt: skip

    async def run_page(request: Request) -> HTMLResponse:
        run_id = request.path_params["run_id"]
        n = page_of(request)
        steps, comparisons = await store.report(run_id, limit=PAGE + 1, offset=n * PAGE)
        if not steps and not comparisons:
            return page("index.html", f"no run {run_id}", 404, comparisons=[], verdict=None, run=run_id, n=0,
                        more=False)  # fmt: skip
        more = len(steps) > PAGE or len(comparisons) > PAGE
        return page("run.html", f"run {run_id}", steps=steps[:PAGE], comparisons=comparisons[:PAGE], n=n, more=more)

    async def comparison_page(request: Request) -> HTMLResponse:
        try:
            event_id = str(uuid.UUID(request.path_params["event_id"]))
        except ValueError:
            return page("index.html", "not a comparison id", 404, comparisons=[], verdict=None, run=None, n=0,
                        more=False)  # fmt: skip
        c = await store.comparison(event_id)
        if c is None:
            return page("index.html", f"no comparison {event_id}", 404, comparisons=[], verdict=None, run=None, n=0,
                        more=False)  # fmt: skip
        diff, problem = None, None
        if c["diff_sha256"]:
            try:
                diff = view(await fetch(diffs, c["diff_sha256"]))
            except (NotFound, CorruptDiff) as exc:
                problem = str(exc)
            except ReplaywatchError as exc:
                problem = f"S3 could not be reached: {exc}"
        return page("comparison.html", f"{c['verdict']} · {c['step_id']}", c=c, diff=diff, problem=problem)

    async def stats(request: Request) -> HTMLResponse:
        return page("stats.html", "the last hour", counts=await store.verdict_counts(3600))

    async def fleet(request: Request) -> HTMLResponse:
        return page(
            "rates.html",
            "drift rates",
            rows=await store.rates.cohorts(),
            alerts=await store.rates.alerts(open_only=True),
        )

    async def behind(request: Request) -> HTMLResponse:
        name, q = request.path_params["cohort"], request.query_params
        start, end = q.get("from", ""), q.get("to", "")
        if not (start.isdigit() and end.isdigit()):
            return page("behind.html", "give from and to (ms)", 400, cohort=name, comparisons=[], start=None, end=None)
        found = await store.rates.comparisons(
            name, q.get("policy") or None, int(start), int(end), drifted=bool(q.get("drifted"))
        )
        return page("behind.html", f"comparisons of {name}", cohort=name, comparisons=found, start=int(start),
                    end=int(end))  # fmt: skip

    async def cohorts(request: Request) -> HTMLResponse:
        return page("cohorts.html", "cohorts", rows=by_cohort(await store.envelopes()), k=3)

    async def cohort_page(request: Request) -> HTMLResponse:
        name = request.path_params["cohort"]
        found = [v for v in by_cohort(await store.envelopes()) if v.cohort == name]
        standing = [r for r in await store.rates.cohorts() if r.cohort == name]
        width = int(request.query_params.get("width", "300000")) if request.query_params.get(
            "width", "").isdigit() else 300_000  # fmt: skip
        points = await store.rates.series(name, width if width in dict(WIDTHS) else 300_000)
        if not found and not standing and not points:
            return page("cohorts.html", f"no cohort {name}", 404, rows=[], k=3)
        alerts = await store.rates.alerts(name)
        rate = standing[0] if standing else None
        reference = rate.last.get("reference_rate") if rate else None
        since = (points[-1].start_ms if points else 0) - 86_400_000
        steps, paths = await store.rates.drifting(name, since)
        rule = toml_rule(suggest(found[0], 0.02), f"cohort {name}") if found else None
        return page("cohort.html", f"cohort {name}", v=found[0] if found else None, k=3, target=0.02, rule=rule,
                    rate=rate, chart=svg_chart(points, alerts, reference), alerts=alerts, steps=steps, paths=paths,
                    cohort=name, widths=WIDTHS)  # fmt: skip

    async def healthz(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[
        Route("/", index), Route("/runs/{run_id:path}", run_page), Route("/comparisons/{event_id}", comparison_page),
        Route("/stats", stats), Route("/rates", fleet), Route("/cohorts", cohorts),
        Route("/cohorts/{cohort:path}/comparisons", behind), Route("/cohorts/{cohort:path}", cohort_page),
        Route("/healthz", healthz),
    ])  # fmt: skip
    app.add_middleware(BaseHTTPMiddleware, dispatch=partial(guard, access))
    return access.wrap(app)


@contextlib.asynccontextmanager
async def serving_web(app: ASGIApp, host: str, port: int) -> AsyncIterator[int]:
    """Serve ``app`` with uvicorn while the block runs; yields the bound port (``port``
    0: a free one)."""
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the web server stopped during its start")
        await asyncio.sleep(0.02)
    try:
        yield int(server.servers[0].sockets[0].getsockname()[1])
    finally:
        server.should_exit = True
        await task
