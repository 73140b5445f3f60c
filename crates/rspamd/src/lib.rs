//! A client of rspamd's HTTP protocol, the spam engine Tern delegates content filtering to:
//! scanning a message with its envelope (`POST /checkv2` on a normal worker) and teaching the
//! Bayes statistics of a user (`POST /learnspam`, `/learnham` on the controller).
//!
//! It knows nothing of SMTP sessions, IMAP or storage: the SMTP front-end decides what a
//! verdict means for a transaction, and the relay's learner decides when to teach. The verdict
//! is parsed by a plain function ([`parse_verdict`]) so that it is testable without an engine.

use std::{net::IpAddr, time::Duration};

use bytes::Bytes;

mod http;

/// What went wrong talking to rspamd.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// rspamd could not be reached, did not answer in time, or answered with a server error:
    /// the caller's failure policy decides (try again later, or go on unscanned).
    #[error("rspamd at {url} is unavailable: {detail}")]
    Unavailable { url: String, detail: String },
    /// rspamd answered something this client cannot read.
    #[error("rspamd at {url} answered what cannot be read: {detail}")]
    Protocol { url: String, detail: String },
    /// A header value that HTTP cannot carry (a control character in a HELO name, say).
    #[error("the {header} value cannot be sent to rspamd: {value:?}")]
    BadHeader { header: &'static str, value: String },
}

/// The action rspamd asks for, in order of severity (its names, as `/checkv2` gives them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    NoAction,
    Greylist,
    AddHeader,
    RewriteSubject,
    SoftReject,
    Reject,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "no action" => Action::NoAction,
            "greylist" => Action::Greylist,
            "add header" => Action::AddHeader,
            "rewrite subject" => Action::RewriteSubject,
            "soft reject" => Action::SoftReject,
            "reject" => Action::Reject,
            _ => return None,
        })
    }

    /// rspamd's name, also the `action` label of Tern's metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::NoAction => "no action",
            Action::Greylist => "greylist",
            Action::AddHeader => "add header",
            Action::RewriteSubject => "rewrite subject",
            Action::SoftReject => "soft reject",
            Action::Reject => "reject",
        }
    }

    /// Every action, for metrics that show each from the start.
    pub const ALL: [Action; 6] = [
        Action::NoAction,
        Action::Greylist,
        Action::AddHeader,
        Action::RewriteSubject,
        Action::SoftReject,
        Action::Reject,
    ];
}

/// One symbol (rule) that matched, with its score.
#[derive(Debug, Clone, PartialEq)]
pub struct Symbol {
    pub name: String,
    pub score: f64,
}

/// What rspamd says of a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub action: Action,
    pub score: f64,
    /// The score at which rspamd would reject (its `required_score`).
    pub required_score: f64,
    /// Sorted by falling score, then name.
    pub symbols: Vec<Symbol>,
    /// The text rspamd wants in an SMTP refusal, when it gives one.
    pub smtp_message: Option<String>,
    /// Header fields rspamd asks to add (its milter block), in the order given.
    pub add_headers: Vec<(String, String)>,
    /// Header fields rspamd asks to remove first.
    pub remove_headers: Vec<String>,
    /// The new Subject of `rewrite subject`.
    pub subject: Option<String>,
    /// rspamd skipped the remaining checks: a rule decided early (GTUBE, a forced action) or
    /// its settings said so. The action is the verdict either way.
    pub skipped: bool,
}

impl Verdict {
    /// The verdict as the `X-Spamd-Result` header rspamd's own MTA integrations add:
    /// `default: False [1.20 / 15.00]; SYMBOL(0.50); ...`.
    pub fn report(&self) -> String {
        let spam =
            matches!(self.action, Action::Reject | Action::SoftReject | Action::AddHeader | Action::RewriteSubject);
        let mut out = format!(
            "default: {} [{:.2} / {:.2}];",
            if spam { "True" } else { "False" },
            self.score,
            self.required_score
        );
        for s in &self.symbols {
            out.push_str(&format!(" {}({:.2});", s.name, s.score));
        }
        out.pop();
        out
    }
}

/// The parts of a `/checkv2` answer Tern reads, deserialised directly: the symbols'
/// descriptions and options, the timings and the rest are skipped, not built.
#[derive(serde::Deserialize)]
struct Answer<'a> {
    #[serde(borrow)]
    action: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    score: f64,
    #[serde(default)]
    required_score: f64,
    #[serde(default)]
    is_skipped: bool,
    #[serde(default)]
    symbols: std::collections::BTreeMap<String, AnswerSymbol>,
    #[serde(default)]
    messages: AnswerMessages,
    #[serde(default)]
    milter: Option<Milter>,
    #[serde(default)]
    subject: Option<String>,
}

#[derive(serde::Deserialize)]
struct AnswerSymbol {
    #[serde(default)]
    score: f64,
}

#[derive(serde::Deserialize, Default)]
struct AnswerMessages {
    #[serde(default)]
    smtp_message: Option<String>,
}

#[derive(serde::Deserialize)]
struct Milter {
    #[serde(default)]
    add_headers: std::collections::BTreeMap<String, HeaderValues>,
    #[serde(default)]
    remove_headers: std::collections::BTreeMap<String, serde::de::IgnoredAny>,
}

/// The milter block gives a header either as a string, as {"value": .., "order": ..}, or as a
/// list of those for several fields of one name.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum HeaderValues {
    // A list first: a lone value would match anything, through `HeaderValue::Other`.
    Many(Vec<HeaderValue>),
    One(HeaderValue),
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum HeaderValue {
    Text(String),
    Ordered { value: String },
    Other(serde::de::IgnoredAny),
}

impl HeaderValue {
    fn text(self) -> Option<String> {
        match self {
            HeaderValue::Text(t) | HeaderValue::Ordered { value: t } => Some(t),
            HeaderValue::Other(_) => None,
        }
    }
}

/// Reads a `/checkv2` answer.
pub fn parse_verdict(json: &[u8]) -> Result<Verdict, String> {
    let a: Answer = serde_json::from_slice(json).map_err(|e| format!("not a rspamd answer: {e}"))?;
    let action_name = a.action.ok_or("no action in the answer")?;
    let action = Action::parse(&action_name).ok_or_else(|| format!("unknown action {action_name:?}"))?;
    let mut symbols: Vec<Symbol> = a.symbols.into_iter().map(|(name, s)| Symbol { name, score: s.score }).collect();
    symbols.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.name.cmp(&b.name)));
    let (mut add_headers, mut remove_headers) = (Vec::new(), Vec::new());
    if let Some(milter) = a.milter {
        for (name, values) in milter.add_headers {
            let values = match values {
                HeaderValues::One(v) => vec![v],
                HeaderValues::Many(list) => list,
            };
            add_headers.extend(values.into_iter().filter_map(HeaderValue::text).map(|t| (name.clone(), t)));
        }
        remove_headers = milter.remove_headers.into_keys().collect();
    }
    Ok(Verdict {
        action,
        score: a.score,
        required_score: a.required_score,
        symbols,
        smtp_message: a.messages.smtp_message.filter(|m| !m.is_empty()),
        add_headers,
        remove_headers,
        subject: a.subject,
        skipped: a.is_skipped,
    })
}

/// Where rspamd is and how long to wait for it.
#[derive(Debug, Clone)]
pub struct Options {
    /// A normal worker, e.g. `http://127.0.0.1:11333`.
    pub url: String,
    /// The controller, e.g. `http://127.0.0.1:11334`; needed only to learn.
    pub controller_url: String,
    /// The controller's password, when it requires one for learning.
    pub password: Option<String>,
    /// The longest a scan or a learn may take, connecting included.
    pub timeout: Duration,
}

/// A message's envelope and connection, as rspamd's request headers carry them.
#[derive(Debug, Clone, Default)]
pub struct Envelope<'a> {
    pub ip: Option<IpAddr>,
    pub helo: &'a str,
    /// The reverse path; empty for the null sender.
    pub from: &'a str,
    pub rcpts: &'a [String],
    /// The authenticated user of a submission.
    pub user: Option<&'a str>,
    pub queue_id: &'a str,
    /// The one recipient whose settings and statistics apply (rspamd's per-user statistics).
    pub deliver_to: Option<&'a str>,
    /// This server's name.
    pub mta_name: &'a str,
    /// The TLS protocol version and cipher suite of the client's connection.
    pub tls: Option<(&'a str, &'a str)>,
    /// Per-message settings for rspamd's settings module, as a JSON object.
    pub settings: Option<&'a str>,
}

/// Spam or ham, for learning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learn {
    Spam,
    Ham,
}

impl Learn {
    pub fn as_str(self) -> &'static str {
        match self {
            Learn::Spam => "spam",
            Learn::Ham => "ham",
        }
    }
}

/// What a learn came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    Learned,
    /// rspamd had learned this message as this class already (its 208): nothing to do again.
    AlreadyLearned,
}

/// A client; cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    options: Options,
    normal: http::Endpoint,
    /// The controller, or the normal worker when none is configured (which refuses to learn).
    controller: http::Endpoint,
}

/// Request headers, checked as they are added.
struct Headers<'a>(Vec<(&'static str, &'a str)>);

impl<'a> Headers<'a> {
    fn add(&mut self, name: &'static str, value: &'a str) -> Result<(), Error> {
        if !http::valid_value(value) {
            return Err(Error::BadHeader { header: name, value: value.to_string() });
        }
        self.0.push((name, value));
        Ok(())
    }
}

impl Client {
    pub fn new(options: Options) -> Result<Client, Error> {
        let endpoint = |url: &str| {
            http::Endpoint::parse(url).map_err(|detail| Error::Unavailable { url: url.to_string(), detail })
        };
        let normal = if options.url.is_empty() {
            http::Endpoint { authority: String::new(), prefix: String::new() }
        } else {
            endpoint(&options.url)?
        };
        let controller =
            if options.controller_url.is_empty() { normal.clone() } else { endpoint(&options.controller_url)? };
        Ok(Client { options, normal, controller })
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Scans `message` (as it will be delivered) with its envelope.
    pub async fn check(&self, envelope: &Envelope<'_>, message: Bytes) -> Result<Verdict, Error> {
        let ip = envelope.ip.map(|ip| ip.to_string());
        let mut h = Headers(Vec::with_capacity(8 + envelope.rcpts.len()));
        if let Some(ip) = &ip {
            h.add("IP", ip)?;
        }
        if !envelope.helo.is_empty() {
            h.add("Helo", envelope.helo)?;
        }
        // rspamd reads an empty From as "no envelope sender"; the null sender is `<>`.
        h.add("From", if envelope.from.is_empty() { "<>" } else { envelope.from })?;
        for r in envelope.rcpts {
            h.add("Rcpt", r)?;
        }
        if let Some(user) = envelope.user {
            h.add("User", user)?;
        }
        if !envelope.queue_id.is_empty() {
            h.add("Queue-Id", envelope.queue_id)?;
        }
        if let Some(d) = envelope.deliver_to {
            h.add("Deliver-To", d)?;
        }
        if !envelope.mta_name.is_empty() {
            h.add("MTA-Name", envelope.mta_name)?;
        }
        if let Some((version, cipher)) = envelope.tls {
            h.add("TLS-Version", version)?;
            h.add("TLS-Cipher", cipher)?;
        }
        if let Some(settings) = envelope.settings {
            h.add("Settings", settings)?;
        }
        let url = &self.options.url;
        let r = self.exchange(&self.normal, url, "POST", "/checkv2", &h.0, &message).await?;
        match r.status {
            200 => parse_verdict(&r.body).map_err(|detail| Error::Protocol { url: url.clone(), detail }),
            s => Err(status_error(url, s, &r.body)),
        }
    }

    /// Teaches `user`'s statistics (rspamd's per-user Bayes, keyed by the Deliver-To header)
    /// that `message` is spam or ham.
    pub async fn learn(&self, class: Learn, user: &str, message: Bytes) -> Result<Learned, Error> {
        let mut h = Headers(Vec::with_capacity(3));
        h.add("Deliver-To", user)?;
        h.add("Rcpt", user)?;
        if let Some(p) = &self.options.password {
            h.add("Password", p)?;
        }
        let url = if self.options.controller_url.is_empty() { &self.options.url } else { &self.options.controller_url };
        let path = format!("/learn{}", class.as_str());
        let r = self.exchange(&self.controller, url, "POST", &path, &h.0, &message).await?;
        match r.status {
            208 => Ok(Learned::AlreadyLearned),
            200..=207 => Ok(Learned::Learned),
            s => Err(status_error(url, s, &r.body)),
        }
    }

    /// Whether the worker answers its ping, for readiness.
    pub async fn ping(&self) -> bool {
        let r = self.exchange(&self.normal, &self.options.url, "GET", "/ping", &[], b"").await;
        r.is_ok_and(|r| r.status == 200)
    }

    async fn exchange(
        &self,
        endpoint: &http::Endpoint,
        url: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<http::Response, Error> {
        if endpoint.authority.is_empty() {
            return Err(Error::Unavailable { url: url.to_string(), detail: "no URL is configured".into() });
        }
        http::exchange(endpoint, method, path, headers, body, self.options.timeout)
            .await
            .map_err(|e| Error::Unavailable { url: url.to_string(), detail: e.to_string() })
    }
}

/// A status other than success: rspamd's server errors say "try later", the rest "it will not".
fn status_error(url: &str, status: u16, body: &[u8]) -> Error {
    let detail = format!("{status}: {}", String::from_utf8_lossy(body));
    if status >= 500 {
        Error::Unavailable { url: url.to_string(), detail }
    } else {
        Error::Protocol { url: url.to_string(), detail }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_are_read_with_headers_in_every_shape() {
        let json = br#"{"is_skipped":false,"score":7.5,"required_score":15.0,"action":"add header",
            "symbols":{"B":{"name":"B","score":1.5},"A":{"name":"A","score":6.0},"C":{"name":"C","score":0}},
            "messages":{"smtp_message":"Go away"},
            "milter":{"add_headers":{"X-Spam":"Yes","X-Spamd-Bar":{"value":"+++++++","order":0},
              "X-Multi":[{"value":"one"},"two"]},"remove_headers":{"X-Spam":1}}}"#;
        let v = parse_verdict(json).unwrap();
        assert_eq!(v.action, Action::AddHeader);
        assert_eq!((v.score, v.required_score), (7.5, 15.0));
        let names: Vec<&str> = v.symbols.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["A", "B", "C"]);
        assert_eq!(v.smtp_message.as_deref(), Some("Go away"));
        assert!(v.add_headers.contains(&("X-Spam".into(), "Yes".into())));
        assert!(v.add_headers.contains(&("X-Spamd-Bar".into(), "+++++++".into())));
        assert!(v.add_headers.contains(&("X-Multi".into(), "one".into())));
        assert!(v.add_headers.contains(&("X-Multi".into(), "two".into())));
        assert_eq!(v.remove_headers, vec!["X-Spam".to_string()]);
        assert_eq!(v.report(), "default: True [7.50 / 15.00]; A(6.00); B(1.50); C(0.00)");
    }

    #[test]
    fn bad_answers_are_errors_not_verdicts() {
        assert!(parse_verdict(b"not json").is_err());
        assert!(parse_verdict(br#"{"score":1}"#).is_err());
        assert!(parse_verdict(br#"{"action":"explode"}"#).is_err());
        let minimal = parse_verdict(br#"{"action":"no action"}"#).unwrap();
        assert_eq!((minimal.action, minimal.symbols.len(), minimal.skipped), (Action::NoAction, 0, false));
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Some(a));
        }
    }

    /// A closed port is "unavailable" (the failure policy's case), within the timeout.
    #[tokio::test]
    async fn an_engine_that_is_down_is_unavailable() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let client = Client::new(Options {
            url: format!("http://{closed}"),
            controller_url: String::new(),
            password: None,
            timeout: Duration::from_secs(2),
        })
        .unwrap();
        let err = client.check(&Envelope::default(), Bytes::from_static(b"Subject: x\r\n\r\nx\r\n")).await.unwrap_err();
        assert!(matches!(err, Error::Unavailable { .. }), "{err}");
        assert!(!client.ping().await);
    }
}
