#!/usr/bin/env python3
"""Offline checks of the chart's monitoring: the PrometheusRule, the Grafana dashboard and the
ServiceMonitor (no Kubernetes API server, no Prometheus server).

Run through charts/tern/ci/test.sh after check_chart.py, with the same virtualenv; it renders
the chart the way check_chart.py does (imported from it) and needs promtool (Debian's
prometheus package, which test.sh installs when it runs as root). Each check prints one line;
the last line is "N passed, N failed".

  1. helm lint --strict with everything monitoring turned on, and values.schema.json refuses
     broken monitoring values; the defaults render none of it;
  2. with the defaults and with every ci/*-values.yaml, all with monitoring on: the
     ServiceMonitor follows its values and selects the metrics Service of every Tern
     workload, each with a port named http; the alerts select this release's series by the
     labels Prometheus Operator gives them: namespace, job (exactly the selected Services'
     names) and, for kube-state-metrics, the names of the release's pods (and no other pod);
     every alert has a severity, a summary and a description, and prometheusRule.disabled
     leaves alerts out;
  3. `promtool check rules` on the rendered PrometheusRule's spec, and `promtool test rules`
     with ci/prometheus-rules-test.yaml (rules rendered with the default thresholds, each
     alert's description left out: the test compares labels and summaries): every alert fires
     in at least one case and one case expects none; as a control, the same tests fail
     against rules rendered for another namespace;
  4. the dashboard ConfigMap carries dashboards/tern.json unchanged with the sidecar's label;
     the JSON is a Grafana dashboard (schemaVersion, a Prometheus datasource variable used by
     every panel, namespace and job variables, unique panel ids) and every expression is
     scoped to $namespace and parses (`promtool check rules` on them as recording rules, with
     the Grafana variables replaced by concrete values);
  5. every tern_* metric the alerts and the dashboard use is exported by the real binaries: a
     `tern dev` (on free loopback ports, a temporary data directory) and a `tern-operator run`
     (its kubeconfig pointing at a closed port) are started from $CARGO_TARGET_DIR/debug (or
     target/debug) and scraped (after one SMTP, IMAP and POP3 session with tern dev, so that the
     front-ends' labelled families have samples); a missing binary fails the check. tern dev
     gets a config with [spam] (rspamd and its controller on a closed loopback port, the
     failure policy tempfail) and a DNS blocklist zone, so that the spam filter's, the
     learner's and the rspamd readiness gauge's families exist, and the blocklist counter has
     a sample with its zone label. The label names the expressions match or aggregate by must
     be on the samples of each metric that has some. The other metrics must be in
     EXTERNAL_METRICS, the cluster exporters' metrics the chart relies on.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_chart as chart  # noqa: E402  (render, lint and free_port, shared with the chart check)

ROOT = chart.ROOT
CHART = chart.CHART
NAMESPACE = chart.NAMESPACE
TARGET = os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"), "debug")
TERN = os.path.join(TARGET, "tern")
OPERATOR = os.path.join(TARGET, "tern-operator")
RULES_TEST = os.path.join(CHART, "ci", "prometheus-rules-test.yaml")
DASHBOARD = os.path.join(CHART, "dashboards", "tern.json")
# The name ci/prometheus-rules-test.yaml's rule_files gives the rendered rules.
RULE_FILE = "tern-rules.yaml"
# Metrics that come from the cluster's exporters, not from Tern.
EXTERNAL_METRICS = {
    "up": "Prometheus, one per scrape target",
    "container_cpu_usage_seconds_total": "cAdvisor (the kubelet)",
    "container_memory_working_set_bytes": "cAdvisor (the kubelet)",
    "kube_pod_container_status_restarts_total": "kube-state-metrics",
    "kube_deployment_status_replicas_available": "kube-state-metrics",
    "kube_deployment_spec_replicas": "kube-state-metrics",
}
# Every monitoring option turned on, with the operator (whose metrics Service is selected too).
MONITORING_VALUES = {
    "operator": {"enabled": True},
    "serviceMonitor": {"enabled": True, "namespace": "monitoring", "labels": {"release": "prom"},
                       "interval": "15s", "scrapeTimeout": "5s", "honorLabels": True,
                       "relabelings": [{"targetLabel": "cluster", "replacement": "eu1"}],
                       "metricRelabelings": [{"sourceLabels": ["__name__"], "regex": "go_.*", "action": "drop"}]},
    "prometheusRule": {"enabled": True, "namespace": "monitoring", "labels": {"release": "prom"},
                       "alertLabels": {"team": "mail"}},
    "dashboards": {"enabled": True, "namespace": "grafana", "labels": {"grafana_dashboard": "1", "team": "mail"},
                   "annotations": {"grafana_folder": "Mail"}},
}
SEVERITIES = {"warning", "critical"}
# The workloads that serve Tern's /metrics.
TERN_COMPONENTS = {"mailbox", "smtp", "imap", "pop3", "managesieve", "relay", "operator"}
# What the dashboard's variables become when its expressions are parsed.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h",
                     "$namespace": NAMESPACE, "${namespace}": NAMESPACE,
                     "$job": "tern-mailbox|tern-smtp-metrics", "${job}": "tern-mailbox|tern-smtp-metrics"}
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
                   "offset", "bool", "inf", "nan", "atan2"}

results: list[tuple[str, bool]] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    results.append((name, ok))
    print(f"{'ok  ' if ok else 'FAIL'} {name}" + (f": {detail}" if detail and not ok else ""), flush=True)


def merge(*values: dict) -> dict:
    out: dict = {}
    for v in values:
        out = chart.deep_merge(out, v)
    return out


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def alerts_of(rule: dict) -> list[dict]:
    return [r for g in rule["spec"]["groups"] for r in (g.get("rules") or []) if "alert" in r]


# --- PromQL ---------------------------------------------------------------------------------

def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (the bare identifiers that are neither
    functions, keywords, label names nor numbers)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e):
        if m.start() > 0 and (e[m.start() - 1].isdigit() or e[m.start() - 1] == "."):
            continue  # 1e3, 5m
        if m.group(0).lower() in PROMQL_KEYWORDS or e[m.end():].lstrip().startswith("("):
            continue
        names.add(m.group(0))
    # A selector by __name__ only: {__name__="x"}.
    names |= set(re.findall(r'__name__\s*=\s*"([a-zA-Z_:][a-zA-Z0-9_:]*)"', expr))
    return names


def label_matchers(expr: str, label: str) -> list[tuple[str, str]]:
    """Every matcher of label in expr, as (operator, PromQL-unquoted value)."""
    out = []
    for op, raw in re.findall(r'\b' + re.escape(label) + r'\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"', expr):
        out.append((op, json.loads(f'"{raw}"')))
    return out


# --- promtool -------------------------------------------------------------------------------

def promtool(*args: str, cwd: str | None = None) -> tuple[int, str]:
    p = subprocess.run(["promtool", *args], capture_output=True, text=True, cwd=cwd)
    return p.returncode, (p.stdout + p.stderr).strip()


def write_rules(path: str, spec: dict, descriptions: bool = True) -> None:
    spec = json.loads(json.dumps(spec))
    if not descriptions:
        for group in spec["groups"]:
            for rule in group.get("rules") or []:
                rule.get("annotations", {}).pop("description", None)
    with open(path, "w") as f:
        yaml.safe_dump(spec, f, sort_keys=False)


# --- the binaries ---------------------------------------------------------------------------

def exported_names(text: str) -> set[str]:
    """The sample names an exposition (Prometheus text or OpenMetrics) gives Prometheus: from
    every # TYPE line, normalised (a counter x is stored as x_total, a histogram x as x_bucket,
    x_sum and x_count), and from every sample line."""
    names = set()
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "summary": ["", "_sum", "_count"],
                "gaugehistogram": ["_bucket", "_gsum", "_gcount"], "info": ["_info"]}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) < 4:
                continue
            name, kind = parts[2], parts[3]
            if kind == "counter" and name.endswith("_total"):
                names.add(name)
            elif kind == "info" and name.endswith("_info"):
                names.add(name)
            else:
                names |= {name + s for s in suffixes.get(kind, [""])}
        elif line and not line.startswith("#"):
            m = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line)
            if m:
                names.add(m.group(0))
    return names


def scrape(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.read().decode()
    except OSError:
        return None


def exported_labels(text: str) -> dict[str, set[str]]:
    """The label names each sample name of an exposition has (on any of its samples)."""
    labels: dict[str, set[str]] = {}
    for line in text.splitlines():
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s", line)
        if m and not line.startswith("#"):
            names = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*"', m.group(3) or ""))
            labels.setdefault(m.group(1), set()).update(names)
    return labels


def used_labels(exprs: list[str]) -> dict[str, set[str]]:
    """The label names expressions match a metric on, or aggregate it by (`agg by (l)
    (metric{...})` and `agg by (l) (f(metric{...}[..]))`), leaving out the labels Prometheus
    gives every target."""
    target = {"namespace", "job", "pod", "instance", "service", "endpoint", "container", "__name__"}
    used: dict[str, set[str]] = {}
    for expr in exprs:
        for metric, matchers in re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}", expr):
            names = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", re.sub(r'"(?:[^"\\]|\\.)*"', '""', matchers)))
            used.setdefault(metric, set()).update(names - target)
        for by, metric in re.findall(r"\bby\s*\(([^)]*)\)\s*\((?:\s*[a-z_]+\()?\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\{", expr):
            used.setdefault(metric, set()).update({l.strip() for l in by.split(",") if l.strip()} - target)
    return used


def run_and_scrape(argv: list[str], env: dict, metrics_url: str, wanted: set[str], work: str,
                   log_name: str, poke=None, seconds: float = 20) -> tuple[str | None, str]:
    """Starts argv, scrapes metrics_url until every wanted name is there or seconds pass (after
    the first answer, poke() is called once, e.g. to open client sessions), and stops it.
    Returns the last scrape's text (None without one) and the log's tail."""
    log_path = os.path.join(work, log_name)
    with open(log_path, "w") as log:
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work)
    text = None
    try:
        deadline = time.time() + seconds
        while time.time() < deadline and p.poll() is None:
            answer = scrape(metrics_url)
            if answer is not None:
                if text is None and poke is not None:
                    poke()
                    answer = scrape(metrics_url) or answer
                text = answer
                if wanted <= exported_names(text):
                    break
            time.sleep(0.5)
    finally:
        # How it exits is not checked here: tern-operator gives its controllers up to 10 s after
        # SIGTERM when its watches cannot reach an API server, so SIGKILL follows after 15 s.
        p.terminate()
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    with open(log_path, errors="replace") as f:
        tail = f.read()[-600:]
    return text, tail


def client_session(port: int, greeting_end: bytes, command: bytes) -> None:
    """Connects, reads the greeting, sends one command (QUIT, LOGOUT) and reads the answer, so
    that the front-ends' labelled families have samples. Best effort: the scrape says what
    counts."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
            data = b""
            while greeting_end not in data:
                chunk = s.recv(4096)
                if not chunk:
                    return
                data += chunk
            s.sendall(command)
            s.recv(4096)
    except OSError:
        pass


def tern_dev_scrape(wanted: set[str], work: str) -> tuple[str | None, str]:
    http = chart.free_port()
    ports = {flag: chart.free_port() for flag in ["smtp", "submission", "submissions", "pop3", "pop3s", "imap", "imaps",
                                                      "managesieve"]}
    argv = [TERN, "dev", "--data-dir", os.path.join(work, "data"), "--http-listen", f"127.0.0.1:{http}",
            "--grpc-listen", f"127.0.0.1:{chart.free_port()}"]
    for flag, port in ports.items():
        argv += [f"--{flag}-listen", f"127.0.0.1:{port}"]
    # The spam filter's families exist only with a [spam] section (the SMTP front-end's with
    # rspamd_url, the relay's learning ones with controller_url), and
    # tern_readiness_dependency_up{dependency="rspamd"} only with rspamd_url and on_failure
    # tempfail (set here although it is the default): the SMTP front-end then pings rspamd (a
    # closed loopback port here, so the gauge is 0) every 5 s. The pregreet counter is there
    # whatever the config; the DNS blocklist one has a sample (a zero, with its zone label)
    # for each [[smtp.dnsbl]] zone, asked through a DNS server on another closed port when the
    # SMTP session below connects. All are declared at start-up.
    closed = chart.free_port()
    config = os.path.join(work, "tern-dev.toml")
    with open(config, "w") as f:
        f.write(f'[smtp]\ndns_server = "127.0.0.1:{chart.free_port()}"\n\n[[smtp.dnsbl]]\nzone = "dnsbl.invalid"\n\n'
                f'[spam]\nrspamd_url = "http://127.0.0.1:{closed}"\ncontroller_url = "http://127.0.0.1:{closed}"\n'
                'timeout_ms = 1000\non_failure = "tempfail"\n')
    argv += ["--config", config]
    env = {"PATH": os.environ.get("PATH", ""), "HOME": work, "RUST_LOG": "warn"}

    def poke() -> None:
        client_session(ports["smtp"], b"\r\n", b"QUIT\r\n")
        client_session(ports["imap"], b"\r\n", b"a1 LOGOUT\r\n")
        client_session(ports["pop3"], b"\r\n", b"QUIT\r\n")

    return run_and_scrape(argv, env, f"http://127.0.0.1:{http}/metrics", wanted, work, "tern-dev.log", poke)


def operator_scrape(wanted: set[str], work: str) -> tuple[str | None, str]:
    """tern-operator with a kubeconfig whose API server is a closed loopback port and a mailbox
    endpoint on another: its watches fail, and /metrics must still list its families."""
    kubeconfig = os.path.join(work, "kubeconfig")
    with open(kubeconfig, "w") as f:
        yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "closed",
            "clusters": [{"name": "closed", "cluster": {"server": f"https://127.0.0.1:{chart.free_port()}",
                                                         "insecure-skip-tls-verify": True}}],
            "users": [{"name": "closed", "user": {"token": "not-a-token"}}],
            "contexts": [{"name": "closed", "context": {"cluster": "closed", "user": "closed", "namespace": NAMESPACE}}],
        }, f)
    http = chart.free_port()
    argv = [OPERATOR, "run", "--http", f"127.0.0.1:{http}", "--mailbox", f"http://127.0.0.1:{chart.free_port()}",
            "--no-leader-election"]
    env = {"PATH": os.environ.get("PATH", ""), "HOME": work, "KUBECONFIG": kubeconfig, "RUST_LOG": "warn"}
    return run_and_scrape(argv, env, f"http://127.0.0.1:{http}/metrics", wanted, work, "tern-operator.log")


# --- the checks -----------------------------------------------------------------------------

def check_values() -> None:
    errors = chart.lint(MONITORING_VALUES)
    check("helm lint --strict (prometheusRule, dashboards and serviceMonitor on, every option set)",
          not errors, "; ".join(errors))
    bad = {
        "an alert name prometheusRule.disabled does not know": {"prometheusRule": {"disabled": ["TernQueueLarge"]}},
        "a misspelt threshold": {"prometheusRule": {"rules": {"queueOldestHour": 6}}},
        "a ratio above 1": {"prometheusRule": {"rules": {"deliveryFailureRatio": 5}}},
        "a duration Prometheus cannot read": {"prometheusRule": {"rules": {"mailboxDownFor": "5 minutes"}}},
        "a spam alert's duration Prometheus cannot read": {"prometheusRule": {"rules": {"spamUnavailableFor": "5 min"}}},
        "a scrape interval Prometheus cannot read": {"serviceMonitor": {"interval": "30 s"}},
        "a relabeling that is not an object": {"serviceMonitor": {"relabelings": ["drop"]}},
        "a dashboards namespace Kubernetes refuses": {"dashboards": {"namespace": "Grafana_NS"}},
        "an unknown dashboards key": {"dashboards": {"folder": "Mail"}},
    }
    for name, values in bad.items():
        check(f"values.schema.json rejects {name}", bool(chart.lint(values)))
    docs = chart.render(None)
    kinds = {d["kind"] for d in docs}
    dashboards = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboards")]
    check("the defaults render no PrometheusRule, ServiceMonitor or dashboard ConfigMap",
          not ({"PrometheusRule", "ServiceMonitor"} & kinds) and not dashboards)


def check_selection(docs: list[dict], values: dict, label: str) -> None:
    """The ServiceMonitor's endpoints and selector, and the alerts' selectors against them, for
    the manifests rendered from values (label names them in the output)."""

    def check_(name: str, ok: bool, detail: str = "") -> None:
        check(f"{name} ({label})", ok, detail)

    sm_values = values["serviceMonitor"]
    monitors = of_kind(docs, "ServiceMonitor")
    check_("one ServiceMonitor", len(monitors) == 1, str(len(monitors)))
    if not monitors:
        return
    sm = monitors[0]
    ep = sm["spec"]["endpoints"][0]
    ok = (sm["metadata"]["namespace"] == sm_values["namespace"]
          and sm["metadata"]["labels"].get("release") == "prom"
          and ep["interval"] == sm_values["interval"] and ep["scrapeTimeout"] == sm_values["scrapeTimeout"]
          and ep.get("honorLabels") is True and ep["relabelings"] == sm_values["relabelings"]
          and ep["metricRelabelings"] == sm_values["metricRelabelings"]
          and sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]})
    check_("the ServiceMonitor follows serviceMonitor.* (namespace, labels, interval, timeout, honorLabels, "
          "relabelings) and selects the release namespace", ok, json.dumps(sm)[:600])
    match = sm["spec"]["selector"]["matchLabels"]
    services = [s for s in of_kind(docs, "Service")
                if all(s["metadata"].get("labels", {}).get(k) == v for k, v in match.items())]
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")
                 and d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") in TERN_COMPONENTS]

    def selects(svc: dict, w: dict) -> bool:
        labels = w["spec"]["template"]["metadata"]["labels"]
        return all(labels.get(k) == v for k, v in svc["spec"].get("selector", {}).items())

    unscraped = [w["metadata"]["name"] for w in workloads if sum(selects(s, w) for s in services) != 1]
    check_(f"the ServiceMonitor selects one metrics Service per Tern workload ({len(services)} Services, "
          f"{len(workloads)} workloads)", bool(services) and not unscraped, f"not exactly once: {unscraped}")
    no_port = [s["metadata"]["name"] for s in services
               if not any(p.get("name") == ep["port"] for p in s["spec"]["ports"])
               or s["metadata"]["namespace"] != NAMESPACE]
    check_(f"every selected Service has the port {ep['port']!r} in {NAMESPACE}", not no_port, str(no_port))

    rules = of_kind(docs, "PrometheusRule")
    check_("one PrometheusRule", len(rules) == 1, str(len(rules)))
    if not rules:
        return
    rule = rules[0]
    alerts = alerts_of(rule)
    check_("the PrometheusRule follows prometheusRule.* (namespace, labels)",
          rule["metadata"]["namespace"] == "monitoring" and rule["metadata"]["labels"].get("release") == "prom")
    bad = [a.get("alert") for a in alerts
           if a.get("labels", {}).get("severity") not in SEVERITIES or a["labels"].get("team") != "mail"
           or not a.get("annotations", {}).get("summary") or not a["annotations"].get("description")]
    check_(f"every alert ({len(alerts)}) has a severity, prometheusRule.alertLabels, a summary and a description",
          bool(alerts) and not bad, str(bad))
    job_names = {s["metadata"]["name"] for s in services}
    others = {s["metadata"]["name"] for s in of_kind(docs, "Service")} - job_names
    # The chart's rspamd, named even where these values do not run it (the alerts are there
    # whatever spam.* says, like the operator's).
    release_deployments = {d["metadata"]["name"] for d in of_kind(docs, "Deployment")} | {"tern-rspamd"}
    problems = []
    for a in alerts:
        expr = a["expr"]
        names = metric_names(expr)
        for op, value in label_matchers(expr, "namespace"):
            if (op, value) != ("=", NAMESPACE):
                problems.append(f"{a['alert']}: namespace{op}{value!r}")
        if not label_matchers(expr, "namespace"):
            problems.append(f"{a['alert']}: no namespace matcher")
        for op, value in label_matchers(expr, "job"):
            allowed = {n for n in job_names if re.fullmatch(value, n)} if op == "=~" else {value} & job_names
            if op not in ("=", "=~") or not allowed or any(re.fullmatch(value, n) for n in others):
                problems.append(f"{a['alert']}: job{op}{value!r} against Services {sorted(job_names)}")
            if op == "=~" and allowed != job_names:
                problems.append(f"{a['alert']}: job=~ leaves out {sorted(job_names - allowed)}")
        # kube-state-metrics' Deployment series are selected by the Deployment's name instead.
        deployments = label_matchers(expr, "deployment")
        for op, value in deployments:
            if op != "=" or value not in release_deployments:
                problems.append(f"{a['alert']}: deployment{op}{value!r} against Deployments {sorted(release_deployments)}")
        if names & set(EXTERNAL_METRICS) - {"up"} and not label_matchers(expr, "pod") and not deployments:
            problems.append(f"{a['alert']}: kube-state-metrics/cAdvisor series without a pod or deployment matcher")
        if not label_matchers(expr, "job") and not label_matchers(expr, "pod") and not deployments:
            problems.append(f"{a['alert']}: neither a job, a pod nor a deployment matcher")
        for op, value in label_matchers(expr, "pod"):
            pods = [w["metadata"]["name"] + ("-0" if w["kind"] == "StatefulSet" else "-5d8f7c9b4-x2x7k")
                    for w in workloads]
            strangers = ["postgres-0", "webmail-5d8f7c9b4-x2x7k", f"{sm['metadata']['name']}-webmail-0"]
            if op != "=~" or not all(re.fullmatch(value, p) for p in pods) or any(re.fullmatch(value, p) for p in strangers):
                problems.append(f"{a['alert']}: pod{op}{value!r} against pods {pods} and {strangers}")
    check_("every alert selects the release namespace, the jobs the ServiceMonitor gives the selected Services "
          "(and no other Service), and the release's pods", not problems, "; ".join(problems[:8]))


def check_disabled() -> None:
    docs = chart.render({"prometheusRule": {"enabled": True, "disabled": ["TernPodRestarting", "TernRelayQueueGrowing"]}})
    names = {a["alert"] for a in alerts_of(of_kind(docs, "PrometheusRule")[0])}
    all_names = {a["alert"] for a in alerts_of(of_kind(chart.render({"prometheusRule": {"enabled": True}}), "PrometheusRule")[0])}
    check("prometheusRule.disabled leaves exactly those alerts out",
          all_names - names == {"TernPodRestarting", "TernRelayQueueGrowing"}, str(sorted(all_names - names)))


def check_promtool_rules(work: str) -> set[str]:
    """promtool check rules and test rules; returns the alert names."""
    docs = chart.render({"prometheusRule": {"enabled": True}})
    spec = of_kind(docs, "PrometheusRule")[0]["spec"]
    alerts = {a["alert"] for g in spec["groups"] for a in g["rules"]}
    full = os.path.join(work, "full")
    os.makedirs(full)
    write_rules(os.path.join(full, RULE_FILE), spec)
    code, out = promtool("check", "rules", os.path.join(full, RULE_FILE))
    check(f"promtool check rules: the rendered PrometheusRule ({len(alerts)} alerts)", code == 0, out[-800:])

    with open(RULES_TEST) as f:
        tests = yaml.safe_load(f)
    check(f"{os.path.basename(RULES_TEST)} tests the rendered rule file {RULE_FILE}",
          tests.get("rule_files") == [RULE_FILE], str(tests.get("rule_files")))
    fired = {t["alertname"] for case in tests["tests"] for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    quiet = [t["alertname"] for case in tests["tests"] for t in case.get("alert_rule_test", []) if not t.get("exp_alerts")]
    check("every alert fires in at least one test case", alerts <= fired, f"never fires: {sorted(alerts - fired)}")
    check("the tests name no alert the rules do not have", fired | set(quiet) <= alerts,
          str(sorted((fired | set(quiet)) - alerts)))
    check("at least one test case expects an alert not to fire", bool(quiet))

    unit = os.path.join(work, "unit")
    os.makedirs(unit)
    write_rules(os.path.join(unit, RULE_FILE), spec, descriptions=False)
    shutil.copy(RULES_TEST, unit)
    code, out = promtool("test", "rules", os.path.basename(RULES_TEST), cwd=unit)
    check("promtool test rules: ci/prometheus-rules-test.yaml passes", code == 0, out[-1500:])

    # The control: rules of a release in another namespace miss every test series.
    control = os.path.join(work, "control")
    os.makedirs(control)
    with chart.helm.Chart.load(CHART) as c:
        out_other = c.render({"prometheusRule": {"enabled": True}}, name="tern", namespace="other", is_install=True)
    other = next(yaml.safe_load(t) for p, t in out_other.items() if p.endswith("prometheusrule.yaml"))
    write_rules(os.path.join(control, RULE_FILE), other["spec"], descriptions=False)
    shutil.copy(RULES_TEST, control)
    code, _ = promtool("test", "rules", os.path.basename(RULES_TEST), cwd=control)
    check("control: the same tests fail against the rules of a release in another namespace", code != 0)
    return alerts


def dashboard_panels(dash: dict) -> list[dict]:
    out = []
    for p in dash.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def check_dashboard(docs: list[dict], work: str) -> list[str]:
    """The dashboard ConfigMap and JSON; returns the dashboard's expressions (variables
    replaced)."""
    with open(DASHBOARD) as f:
        dash = json.load(f)
    maps = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboards")]
    ok = (len(maps) == 1 and maps[0]["metadata"]["namespace"] == "grafana"
          and maps[0]["metadata"]["labels"].get("grafana_dashboard") == "1"
          and maps[0]["metadata"]["annotations"].get("grafana_folder") == "Mail"
          and set(maps[0]["data"]) == {"tern.json"} and json.loads(maps[0]["data"]["tern.json"]) == dash)
    check("the dashboards ConfigMap carries dashboards/tern.json unchanged, with dashboards.labels, "
          "annotations and namespace", ok)

    variables = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("datasource", {})
    check("the dashboard has a Prometheus datasource variable, and namespace and job variables",
          ds.get("type") == "datasource" and ds.get("query") == "prometheus"
          and variables.get("namespace", {}).get("type") == "query" and "job" in variables)
    panels = [p for p in dashboard_panels(dash) if p.get("type") != "row"]
    ids = [p["id"] for p in dashboard_panels(dash)]
    check(f"the dashboard is a Grafana model: schemaVersion, uid, title, {len(panels)} panels with unique ids "
          "and grid positions", isinstance(dash.get("schemaVersion"), int) and dash["schemaVersion"] >= 36
          and dash.get("uid") and dash.get("title") and panels and len(ids) == len(set(ids))
          and all({"x", "y", "w", "h"} <= set(p.get("gridPos", {})) for p in dashboard_panels(dash)))
    wrong_ds = [p["title"] for p in panels
                if p.get("datasource", {}).get("uid") != "${datasource}"
                or any(t.get("datasource", {}).get("uid") != "${datasource}" for t in p.get("targets", []))]
    wrong_ds += [n for n, v in variables.items() if v["type"] == "query" and v["datasource"].get("uid") != "${datasource}"]
    check("every panel, query and query variable uses ${datasource}", not wrong_ds, str(wrong_ds))

    raw = [(p["title"], t["refId"], t["expr"]) for p in panels for t in p.get("targets", [])]
    unscoped = [f"{title} {ref}" for title, ref, e in raw if 'namespace="$namespace"' not in e]
    check(f"every dashboard expression ({len(raw)}) selects namespace=\"$namespace\"", raw and not unscoped, str(unscoped))
    exprs, rules, leftover = [], [], []
    for i, (title, ref, expr) in enumerate(raw):
        for var in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
            expr = expr.replace(var, GRAFANA_VARIABLES[var])
        if "$" in expr:
            leftover.append(f"{title} {ref}")
        exprs.append(expr)
        rules.append({"record": f"tern_dashboard:panel_{i}", "expr": expr})
    for name, v in variables.items():
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"label_values\((.*),\s*[a-zA-Z_]+\)", q.strip())
            if m:
                expr = m.group(1)
                for var in GRAFANA_VARIABLES:
                    expr = expr.replace(var, GRAFANA_VARIABLES[var])
                exprs.append(expr)
                rules.append({"record": f"tern_dashboard:variable_{name}", "expr": expr})
            else:
                leftover.append(f"variable {name}")
    check("the dashboard uses no variable but $namespace, $job, $__rate_interval, $__interval and $__range",
          not leftover, str(leftover))
    path = os.path.join(work, "dashboard-rules.yaml")
    with open(path, "w") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f, sort_keys=False)
    if shutil.which("promtool"):
        code, out = promtool("check", "rules", path)
        check(f"promtool parses every dashboard expression ({len(rules)})", code == 0, out[-800:])
    return exprs


def check_metric_names(exprs: list[str], smoke: bool, work: str) -> None:
    used = set().union(*(metric_names(e) for e in exprs))
    external = {n for n in used if not n.startswith("tern_")}
    check("every metric that is not Tern's is an allowed exporter's (" + ", ".join(sorted(EXTERNAL_METRICS)) + ")",
          external <= set(EXTERNAL_METRICS), f"not allowed: {sorted(external - set(EXTERNAL_METRICS))}")
    ours = {n for n in used if n.startswith("tern_")}
    wanted = {
        "tern dev": ({n for n in ours if not n.startswith("tern_operator_")}, TERN, tern_dev_scrape),
        "tern-operator run": ({n for n in ours if n.startswith("tern_operator_")}, OPERATOR, operator_scrape),
    }
    if not smoke:
        print("skip scraping the real binaries (--no-smoke): the tern_* names are unchecked")
        return
    labels_used = used_labels(exprs)
    for name, (names, binary, start) in wanted.items():
        if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
            check(f"`{name}` exports the {len(names)} tern_* metrics the alerts and the dashboard use", False,
                  f"{binary} is not built: run `cargo build -p tern -p tern-operator` (with the same "
                  "CARGO_TARGET_DIR), or `cargo xtask ci`, first")
            continue
        sub = os.path.join(work, name.split()[0])
        os.makedirs(sub)
        text, tail = start(names, sub)
        if text is None:
            check(f"`{name}` serves /metrics", False, f"no scrape answered; log: {tail}")
            continue
        exported = exported_names(text)
        missing = sorted(names - exported)
        check(f"`{name}` exports the {len(names)} tern_* metrics the alerts and the dashboard use", not missing,
              f"missing from {binary}: {', '.join(missing)} (exported tern_*: "
              f"{', '.join(sorted(n for n in exported if n.startswith('tern_')))})")
        # Label names can be seen only on samples: families without one yet are not checked.
        have = exported_labels(text)
        wrong = [f"{m}: {sorted(labels_used[m] - have[m])} (samples have {sorted(have[m])})"
                 for m in sorted(names & set(have) & set(labels_used)) if labels_used[m] - have[m]]
        seen = sorted(m for m in names & set(have) if labels_used.get(m))
        check(f"`{name}`: the labels the alerts and the dashboard use are on the samples of {len(seen)} "
              f"metrics that have some ({', '.join(seen)})", not wrong, "; ".join(wrong))


def main() -> int:
    smoke = "--no-smoke" not in sys.argv
    work = tempfile.mkdtemp(prefix="tern-monitoring-")
    try:
        check_values()
        docs = chart.render(MONITORING_VALUES)
        check_selection(docs, MONITORING_VALUES, "every option set")
        for name, values in chart.values_files()[1:]:
            merged = merge(values or {}, MONITORING_VALUES)
            check_selection(chart.render(merged), merged, name)
        check_disabled()
        if shutil.which("promtool") is None:
            check("promtool is installed", False, "install Debian's prometheus package "
                  "(apt-get install --no-install-recommends prometheus; test.sh does it as root)")
        else:
            check_promtool_rules(work)
        exprs = check_dashboard(docs, work)
        exprs += [a["expr"] for a in alerts_of(of_kind(docs, "PrometheusRule")[0])]
        check_metric_names(exprs, smoke, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    passed = sum(1 for _, ok in results if ok)
    failed = len(results) - passed
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
