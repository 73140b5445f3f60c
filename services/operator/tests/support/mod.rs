//! Records every request the operator makes to the (mock) Kubernetes API server in the tests,
//! as the RBAC rule it needs (verb, API group, resource, subresource, scope), and keeps
//! `tests/api-requests.json` equal to what the tests record: the Helm chart's checks compare
//! that file with the RBAC the chart grants.
//!
//! Each test binary that talks to a mock API server owns a part of the file (the leader tests
//! the Leases, the controller tests the rest). Every request a test makes must already be in
//! the file, checked when the test ends; when the last test of the binary ends (all of them
//! ran, and passed), its part of the file must be exactly what they recorded, sorted and
//! deduplicated. With `TERN_UPDATE_API_REQUESTS=1`, that last test rewrites its part instead.

#![allow(dead_code, reason = "each test binary uses a part of it")]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};

/// The environment variable that makes the tests rewrite the file instead of checking it.
pub const UPDATE: &str = "TERN_UPDATE_API_REQUESTS";

/// In which configuration of the operator a request is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum When {
    /// In every configuration.
    Always,
    /// When the operator may read Secrets in every namespace (no `--secret-namespace`; the
    /// chart's `operator.clusterWideSecrets: true`).
    ClusterWideSecrets,
    /// When the operator reads Secrets only in the namespaces it is given (the chart's
    /// default, `operator.clusterWideSecrets: false`, gives it the release namespace).
    NamespacedSecrets,
}

/// One kind of request, as RBAC sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ApiRequest {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: Option<String>,
    /// `namespace` or `cluster`.
    pub scope: String,
    pub when: When,
}

impl ApiRequest {
    /// The request `method uri` makes, in the configuration `when`.
    pub fn of(method: &str, uri: &http::Uri, when: When) -> ApiRequest {
        let segments: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
        // `/api/v1/...` is the core group; `/apis/<group>/<version>/...` the others.
        let (group, rest) = match segments.as_slice() {
            ["api", _version, rest @ ..] => ("", rest),
            ["apis", group, _version, rest @ ..] => (*group, rest),
            _ => panic!("not a Kubernetes API path: {uri}"),
        };
        // `namespaces/<ns>/<resource>...` is namespaced; `namespaces/<name>` alone is the
        // Namespace object itself.
        let (scope, rest) = match rest {
            ["namespaces", _ns, rest @ ..] if !rest.is_empty() => ("namespace", rest),
            rest => ("cluster", rest),
        };
        let (resource, name, subresource) = match rest {
            [resource] => (*resource, None, None),
            [resource, name] => (*resource, Some(*name), None),
            [resource, name, sub] => (*resource, Some(*name), Some(sub.to_string())),
            _ => panic!("not a Kubernetes API path: {uri}"),
        };
        let watch = uri.query().is_some_and(|q| q.split('&').any(|pair| pair == "watch=true" || pair == "watch=1"));
        let verb = match (method, name.is_some()) {
            ("GET", true) => "get",
            ("GET", false) if watch => "watch",
            ("GET", false) => "list",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", true) => "delete",
            ("DELETE", false) => "deletecollection",
            (method, _) => panic!("unexpected method {method} {uri}"),
        };
        ApiRequest {
            verb: verb.to_string(),
            group: group.to_string(),
            resource: resource.to_string(),
            subresource,
            scope: scope.to_string(),
            when,
        }
    }

    fn key(&self) -> (String, String, String, Option<String>, String) {
        (self.verb.clone(), self.group.clone(), self.resource.clone(), self.subresource.clone(), self.scope.clone())
    }
}

/// Sorted as an RBAC rule reads: by group, resource and subresource, then scope and verb.
impl Ord for ApiRequest {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let order = |r: &Self| {
            (r.group.clone(), r.resource.clone(), r.subresource.clone(), r.scope.clone(), r.verb.clone(), r.when)
        };
        order(self).cmp(&order(other))
    }
}

impl PartialOrd for ApiRequest {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The requests with one entry per kind of request: a request made in both configurations
/// (or in any, `Always`) is `Always`.
pub fn merged(requests: &BTreeSet<ApiRequest>) -> BTreeSet<ApiRequest> {
    let mut whens: BTreeMap<_, BTreeSet<When>> = BTreeMap::new();
    for request in requests {
        whens.entry(request.key()).or_default().insert(request.when);
    }
    whens
        .into_iter()
        .map(|((verb, group, resource, subresource, scope), whens)| {
            let when = if whens.contains(&When::Always) || whens.len() > 1 {
                When::Always
            } else {
                *whens.first().expect("at least one")
            };
            ApiRequest { verb, group, resource, subresource, scope, when }
        })
        .collect()
}

/// The committed file.
pub fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/api-requests.json")
}

/// The file's text for `requests`: a JSON array, one object per line, sorted.
pub fn render(requests: &BTreeSet<ApiRequest>) -> String {
    let lines: Vec<String> = requests.iter().map(|r| serde_json::to_string(r).expect("a request serialises")).collect();
    format!("[\n  {}\n]\n", lines.join(",\n  "))
}

fn recorded() -> std::sync::MutexGuard<'static, BTreeSet<ApiRequest>> {
    static RECORDED: Mutex<BTreeSet<ApiRequest>> = Mutex::new(BTreeSet::new());
    RECORDED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records one request the operator made.
pub fn record(method: &str, uri: &http::Uri, when: When) {
    recorded().insert(ApiRequest::of(method, uri, when));
}

/// How many tests this test binary has: it lists them (`--list`), without running any.
fn tests_in_binary() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test binary's path");
        let out = std::process::Command::new(exe)
            .args(["--list", "--format", "terse"])
            .output()
            .expect("the test binary lists its tests");
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.ends_with(": test")).count()
    })
}

/// Called once at the end of every test of a binary that records (through a guard's `Drop`,
/// not after a panic). `owns` tells which entries of the file this binary records.
pub fn settle(owns: fn(&ApiRequest) -> bool) {
    static SETTLED: AtomicUsize = AtomicUsize::new(0);
    let last = SETTLED.fetch_add(1, Ordering::SeqCst) + 1 == tests_in_binary();
    let mine = merged(&recorded());
    let update = std::env::var_os(UPDATE).is_some_and(|v| !v.is_empty() && v != "0");

    // Other binaries may rewrite their part of the file at the same time.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path())
        .expect("open tests/api-requests.json");
    file.lock().expect("lock tests/api-requests.json");
    let mut text = String::new();
    file.read_to_string(&mut text).expect("read tests/api-requests.json");
    let committed: BTreeSet<ApiRequest> =
        if text.trim().is_empty() { BTreeSet::new() } else { serde_json::from_str(&text).unwrap_or_default() };
    let hint = format!(
        "services/operator/tests/api-requests.json is stale: regenerate it with `{UPDATE}=1 cargo test -p \
         tern-operator` (the whole suite) and commit it, then check the chart's RBAC against it"
    );

    if update {
        if last {
            let others = committed.into_iter().filter(|r| !owns(r));
            let all: BTreeSet<ApiRequest> = others.chain(mine).collect();
            file.set_len(0).expect("truncate");
            file.rewind().expect("rewind");
            file.write_all(render(&all).as_bytes()).expect("write tests/api-requests.json");
        }
        return;
    }
    for request in &mine {
        let covered =
            committed.iter().any(|c| c.key() == request.key() && (c.when == request.when || c.when == When::Always));
        assert!(covered, "the operator made {request:?}, which is not listed: {hint}");
    }
    if last {
        let listed: BTreeSet<ApiRequest> = committed.iter().filter(|r| owns(r)).cloned().collect();
        let gone: Vec<_> = listed.difference(&mine).collect();
        assert!(gone.is_empty(), "listed but no longer made (or made in other configurations): {gone:?}: {hint}");
        assert_eq!(text, render(&committed), "not sorted, deduplicated and formatted as generated: {hint}");
    }
}

/// Settles the test it lives in when dropped at the test's end ([`settle`]); one per test.
pub struct Guard(pub fn(&ApiRequest) -> bool);

impl Drop for Guard {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            settle(self.0);
        }
    }
}
