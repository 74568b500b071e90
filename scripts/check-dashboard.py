#!/usr/bin/env python3
"""Checks manifests/addons/grafana/mizzen-dashboard.json: that it parses, that its panels are well
formed, and that every metric its PromQL queries is one that Mizzen exports.

A dashboard query on a misspelt or renamed metric shows an empty panel, not an error, so the
names are checked against the sources: each `register("name", ...)` call of a
prometheus-client registry in proxy/, operator/ and webhook/ (with the prefix of the file's
`Registry::with_prefix` / `sub_registry_with_prefix`), as the series Prometheus stores for it
(`name`, `name_total`, `name_bucket`, `name_sum`, `name_count`, `name_created`).

PENDING names the dashboard already uses ahead of the code that will export them. They pass
with a NOTE, and a NOTE says when one is exported and can leave the list.

Usage: scripts/check-dashboard.py [DASHBOARD.json]   Exits 1 naming each problem.
"""

import glob
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DASHBOARD = os.path.join(ROOT, "manifests/addons/grafana/mizzen-dashboard.json")
# Crates whose binaries serve metrics: the proxy, the operator (and its agent), the webhook.
SOURCE_DIRS = ("proxy", "operator", "webhook")

# The canary controller's metrics, used by the "Canary rollouts" row before the controller
# exists: mizzen_canary_weight{namespace, name} (percent of traffic to the canary) and
# mizzen_canary_phase{namespace, name, phase} (1 for the Canary's current phase, else 0).
PENDING: set[str] = set()

SERIES_SUFFIXES = ("", "_total", "_bucket", "_sum", "_count", "_created")

# Words of PromQL that look like metric names but are not.
KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "and", "or", "unless", "atan2", "inf", "nan", "start", "end",
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}


def promql_metric_names(expr):
    """The metric names a PromQL expression selects (Grafana variables allowed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', " ", expr)  # strings
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\[\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", text
    )  # grouping labels
    text = re.sub(r"\$\{[^}]*\}|\$\w+", " ", text)  # Grafana variables
    names = []
    tokens = re.finditer(r"(?P<num>\d[\w.]*)|(?P<id>[A-Za-z_:][\w:]*)|(?P<other>\S)", text)
    for token in tokens:
        name = token.group("id")
        if not name or name in KEYWORDS:
            continue
        if text[token.end():].lstrip().startswith("("):
            continue  # a function call
        names.append(name)
    return names


def template_metric_names(query):
    """Metric names of a Grafana Prometheus variable query."""
    query = query.strip()
    match = re.fullmatch(r"label_values\((.*)\)", query, re.DOTALL)
    if match:
        args = match.group(1)
        # label_values(label) names no metric; label_values(selector, label) does.
        depth, split = 0, None
        for i, c in enumerate(args):
            depth += c in "({["
            depth -= c in ")}]"
            if c == "," and depth == 0:
                split = i
        return promql_metric_names(args[:split]) if split is not None else []
    match = re.fullmatch(r"(?:query_result|metrics)\((.*)\)", query, re.DOTALL)
    return promql_metric_names(match.group(1)) if match else promql_metric_names(query)


def exported_metrics(root):
    """Base names registered in the sources, prefixed as their registry prefixes them."""
    names = {}
    for top in SOURCE_DIRS:
        for path in glob.glob(os.path.join(root, top, "**", "*.rs"), recursive=True):
            rel = os.path.relpath(path, root)
            if "/tests/" in f"/{rel}" or "/target/" in f"/{rel}":
                continue
            text = open(path, encoding="utf-8").read()
            prefixes = [
                (m.start(), m.group(1))
                for m in re.finditer(r'with_prefix\(\s*"([A-Za-z_:][\w:]*)"', text)
            ]
            for m in re.finditer(r'\.register(?:_with_unit)?\(\s*"([A-Za-z_:][\w:]*)"', text):
                before = [p for at, p in prefixes if at < m.start()]
                name = f"{before[-1]}_{m.group(1)}" if before else m.group(1)
                names.setdefault(name, rel)
    return names


def queries(dashboard):
    """(where, kind, query) for every panel target and variable query, rows included."""
    def walk(panels):
        for panel in panels:
            yield panel
            yield from walk(panel.get("panels", []))

    for panel in walk(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            yield f"panel {panel.get('title')!r} target {target.get('refId')}", "expr", target.get("expr", "")
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var.get("query")
            if isinstance(query, dict):
                query = query.get("query", "")
            yield f"variable {var.get('name')!r}", "template", query or ""


def structure_problems(dashboard):
    problems = []
    for key in ("title", "uid", "panels", "schemaVersion"):
        if key not in dashboard:
            problems.append(f"the dashboard has no {key!r}")
    ids = []

    def walk(panels):
        for panel in panels:
            yield panel
            yield from walk(panel.get("panels", []))

    for panel in walk(dashboard.get("panels", [])):
        ids.append(panel.get("id"))
        grid = panel.get("gridPos", {})
        if grid.get("x", 0) + grid.get("w", 0) > 24:
            problems.append(f"panel {panel.get('title')!r} is wider than the 24-column grid")
        if panel.get("type") != "row":
            exprs = [t.get("expr", "").strip() for t in panel.get("targets", [])]
            if not exprs or not all(exprs):
                problems.append(f"panel {panel.get('title')!r} has a target without a query")
            refs = [t.get("refId") for t in panel.get("targets", [])]
            if len(refs) != len(set(refs)):
                problems.append(f"panel {panel.get('title')!r} repeats a refId")
    duplicates = sorted({i for i in ids if ids.count(i) > 1}, key=str)
    if duplicates:
        problems.append(f"panel ids used more than once: {duplicates}")
    for where, _, query in queries(dashboard):
        bare = re.sub(r'"(?:[^"\\]|\\.)*"', "", query)
        for open_, close in ("()", "{}", "[]"):
            if bare.count(open_) != bare.count(close):
                problems.append(f"{where}: unbalanced {open_}{close} in {query!r}")
    return problems


def self_check():
    """The name extraction on known expressions, so a change to it cannot pass silently."""
    cases = {
        'sum by (destination_service, le) (rate(istio_request_duration_milliseconds_bucket'
        '{reporter=~"$reporter", x="a(b"}[$__rate_interval]))': ["istio_request_duration_milliseconds_bucket"],
        "a_total / ignoring (v) group_left sum without (x) (b_total offset 5m) > bool 1e3":
            ["a_total", "b_total"],
        'histogram_quantile(0.99, sum(rate(x_bucket[5m]))) and on (pod) up == 1': ["x_bucket", "up"],
        "max(mizzen_canary_phase{namespace=~\"${namespace}\"}) == 1": ["mizzen_canary_phase"],
    }
    for expr, expected in cases.items():
        got = promql_metric_names(expr)
        assert got == expected, f"promql_metric_names({expr!r}) = {got}, expected {expected}"
    assert template_metric_names("label_values(istio_requests_total{a=\"b\"}, destination_service)") == [
        "istio_requests_total"
    ]
    assert template_metric_names("label_values(destination_service)") == []


def main(argv):
    self_check()
    path = argv[1] if len(argv) > 1 else DEFAULT_DASHBOARD
    rel = os.path.relpath(path, ROOT)
    try:
        with open(path, encoding="utf-8") as f:
            dashboard = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        print(f"FAIL: {rel}: {e}", file=sys.stderr)
        return 1
    problems = structure_problems(dashboard)
    exported = exported_metrics(ROOT)
    series = {base + suffix: base for base in exported for suffix in SERIES_SUFFIXES}
    used, pending_used = set(), set()
    for where, kind, query in queries(dashboard):
        names = promql_metric_names(query) if kind == "expr" else template_metric_names(query)
        if kind == "expr" and not names:
            problems.append(f"{where}: no metric found in {query!r}")
        for name in names:
            used.add(name)
            if name in series:
                continue
            if name in PENDING:
                pending_used.add(name)
                continue
            problems.append(
                f"{where}: metric {name!r} is not exported by {', '.join(SOURCE_DIRS)} "
                f"(no register(\"...\") makes it)"
            )
    for name in sorted(PENDING):
        if name in series:
            print(f"NOTE: {name} is exported now ({exported[series[name]]}); remove it from PENDING in {os.path.relpath(__file__, ROOT)}")
        elif name in pending_used:
            print(f"NOTE: {name} is used by the dashboard but not exported yet (the canary controller will)")
    for problem in problems:
        print(f"FAIL: {rel}: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(
        f"OK: {rel} parses; {len(used)} metric names in its queries, each exported "
        f"({len(used - pending_used)}) or pending ({len(pending_used)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
