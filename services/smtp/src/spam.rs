//! Spam filtering at the end of DATA: when to ask rspamd, what its verdict means for each local
//! recipient (INBOX, the junk folder, or a refusal of the whole message), and the headers a
//! scanned message carries. The thresholds are rspamd's; Tern honours its actions and adds only
//! the recipients' own choices: scanning off, and senders they allow or block.
//!
//! The decision is a plain function ([`decide`]) so that every combination is tested without
//! an engine; `session/data.rs` calls rspamd and applies the decision.

use std::sync::OnceLock;

use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram};
use tern_rspamd::{Action, Verdict};

use crate::codec::Reply;

/// What to do when rspamd cannot be asked (down, slow, or answering nonsense).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Answer 451: the sender retries later, when rspamd may be back. Nothing goes unscanned.
    Tempfail,
    /// Deliver unscanned, and count it.
    Accept,
}

impl FailurePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::Tempfail => "tempfail",
            FailurePolicy::Accept => "accept",
        }
    }
}

/// The SMTP front-end's spam filter: an rspamd client and what to do without it.
#[derive(Debug, Clone)]
pub struct SpamFilter {
    pub client: tern_rspamd::Client,
    pub on_failure: FailurePolicy,
    /// Messages larger than this are delivered unscanned (rspamd's own limit is similar, and a
    /// spammer gains nothing from mail this large); counted as `too large`.
    pub max_scan_bytes: u64,
}

/// A local recipient's spam settings, as the mailbox service resolved them at RCPT.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecipientSpam {
    pub scan: bool,
    /// Lower-case addresses and `@domain`s.
    pub allow: Vec<String>,
    pub block: Vec<String>,
}

impl RecipientSpam {
    fn lists(list: &[String], senders: &[String]) -> bool {
        senders.iter().any(|s| {
            let domain = s.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
            list.iter().any(|e| e == s || e.strip_prefix('@').is_some_and(|d| !domain.is_empty() && d == domain))
        })
    }

    /// Whether mail from any of `senders` (lower-case) is never spam for this recipient.
    pub fn allows(&self, senders: &[String]) -> bool {
        Self::lists(&self.allow, senders)
    }

    pub fn blocks(&self, senders: &[String]) -> bool {
        Self::lists(&self.block, senders)
    }

    /// Whether a verdict applies at all: scanning on and the sender not allowed.
    fn judged(&self, senders: &[String]) -> bool {
        self.scan && !self.allows(senders)
    }
}

/// What becomes of a message after the scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Refuse the whole message with this reply; nothing is stored.
    pub refuse: Option<Reply>,
    /// Indices (into the local recipients given) whose copy goes to the junk folder.
    pub junk: Vec<usize>,
}

/// Applies a verdict (`None`: not scanned) to the local recipients of a message. A refusal
/// (reject, soft reject, greylist) holds only when no local recipient is exempt from the
/// verdict; otherwise the exempt ones get the message in INBOX and the others in their junk
/// folder, so that one recipient's choice never costs another their mail. A submission's
/// reject or soft reject refuses the message whatever its recipients chose: that is outbound
/// spam, perhaps from a compromised account.
pub fn decide(verdict: Option<&Verdict>, submission: bool, local: &[&RecipientSpam], senders: &[String]) -> Decision {
    let blocked = |r: &RecipientSpam| r.blocks(senders) && !r.allows(senders);
    let Some(v) = verdict else {
        let junk = (0..local.len()).filter(|i| blocked(local[*i])).collect();
        return Decision { refuse: None, junk };
    };
    let judged: Vec<usize> = (0..local.len()).filter(|i| local[*i].judged(senders)).collect();
    let someone_exempt = judged.len() < local.len();
    let text = |default: &str| v.smtp_message.clone().unwrap_or_else(|| default.to_string());
    let refusal = match v.action {
        Action::Reject => Some(Reply::new(550, "5.7.1", text("Message rejected as spam"))),
        Action::SoftReject => {
            Some(Reply::new(451, "4.7.1", text("Message deferred by the spam filter, try again later")))
        }
        Action::Greylist => Some(Reply::new(451, "4.7.1", text("Greylisted, try again later"))),
        _ => None,
    };
    if let Some(reply) = refusal {
        let outbound_spam = submission && matches!(v.action, Action::Reject | Action::SoftReject);
        if outbound_spam || !someone_exempt || (submission && local.is_empty()) {
            return Decision { refuse: Some(reply), junk: vec![] };
        }
    }
    let spam = !matches!(v.action, Action::NoAction | Action::Greylist);
    let junk = (0..local.len()).filter(|i| blocked(local[*i]) || (spam && judged.contains(i))).collect();
    Decision { refuse: None, junk }
}

/// The header fields rspamd's verdict adds to the copies delivered here: those rspamd asks for,
/// and `X-Spamd-Result` and `X-Spam-Status` unless it gave them itself.
pub fn verdict_headers(v: &Verdict) -> String {
    let mut out = String::new();
    let given = |name: &str| v.add_headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    for (name, value) in &v.add_headers {
        out.push_str(&tern_mail::headers::field(name, value));
    }
    if !given("X-Spamd-Result") {
        out.push_str(&tern_mail::headers::field("X-Spamd-Result", &v.report()));
    }
    if !given("X-Spam-Status") {
        let spam = !matches!(v.action, Action::NoAction | Action::Greylist);
        let status = format!(
            "{}, score={:.2} required={:.2} action={}",
            if spam { "Yes" } else { "No" },
            v.score,
            v.required_score,
            v.action.as_str().replace(' ', "_")
        );
        out.push_str(&tern_mail::headers::field("X-Spam-Status", &status));
    }
    out
}

/// Whether a header field is one a spam filter writes, which a sender must not be able to
/// forge: `X-Spam*`, `X-Spamd-*` and `X-Rspamd-*`.
pub fn is_spam_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.starts_with("x-spam") || n.starts_with("x-rspamd-")
}

/// The spam filter's metrics, registered at first use.
#[derive(Debug, Clone)]
pub struct SpamMetrics {
    /// Scans by result: rspamd's action, `unavailable` or `too large`.
    pub scans: Family<ResultLabel, Counter>,
    /// How long rspamd took to answer, in seconds.
    pub latency: Histogram,
    /// Messages delivered without a verdict because rspamd was unavailable and the policy
    /// is `accept`.
    pub unscanned: Counter,
    /// 1 for the failure policy in force.
    pub policy: Family<PolicyLabel, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct PolicyLabel {
    pub policy: &'static str,
}

impl SpamMetrics {
    pub fn global() -> &'static SpamMetrics {
        static METRICS: OnceLock<SpamMetrics> = OnceLock::new();
        METRICS.get_or_init(|| {
            let m = SpamMetrics {
                scans: Family::default(),
                latency: Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
                unscanned: Counter::default(),
                policy: Family::default(),
            };
            for a in Action::ALL {
                let _ = m.scans.get_or_create(&ResultLabel { result: a.as_str() });
            }
            for result in ["unavailable", "too large"] {
                let _ = m.scans.get_or_create(&ResultLabel { result });
            }
            let global = tern_runtime::metrics::Metrics::global();
            global.register(
                "spam_scans",
                "Spam scans by rspamd, by result (action, unavailable, too large)",
                m.scans.clone(),
            );
            global.register("spam_scan_seconds", "How long rspamd took to answer a scan", m.latency.clone());
            global.register(
                "spam_unscanned_deliveries",
                "Messages delivered unscanned because rspamd was unavailable (failure policy accept)",
                m.unscanned.clone(),
            );
            global.register("spam_failure_policy", "The failure policy in force (tempfail, accept)", m.policy.clone());
            m
        })
    }

    /// Shows the policy in force, and the zero samples, from the start.
    pub fn declare(policy: FailurePolicy) {
        let m = Self::global();
        for p in [FailurePolicy::Tempfail, FailurePolicy::Accept] {
            m.policy.get_or_create(&PolicyLabel { policy: p.as_str() }).set(i64::from(p == policy));
        }
    }

    pub fn result(&self, result: &'static str) {
        self.scans.get_or_create(&ResultLabel { result }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(action: Action) -> Verdict {
        Verdict {
            action,
            score: 20.0,
            required_score: 15.0,
            symbols: vec![],
            smtp_message: None,
            add_headers: vec![],
            remove_headers: vec![],
            subject: None,
            skipped: false,
        }
    }

    fn r(scan: bool, allow: &[&str], block: &[&str]) -> RecipientSpam {
        RecipientSpam {
            scan,
            allow: allow.iter().map(|s| s.to_string()).collect(),
            block: block.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn senders() -> Vec<String> {
        vec!["eve@spam.example".to_string()]
    }

    #[test]
    fn reject_refuses_unless_a_recipient_is_exempt() {
        let plain = r(true, &[], &[]);
        let d = decide(Some(&verdict(Action::Reject)), false, &[&plain, &plain], &senders());
        assert_eq!(d.refuse.as_ref().map(|r| r.code), Some(550));
        // One recipient allows the sender's domain: it gets the message, the other gets Junk.
        let allowing = r(true, &["@spam.example"], &[]);
        let d = decide(Some(&verdict(Action::Reject)), false, &[&plain, &allowing], &senders());
        assert_eq!(d, Decision { refuse: None, junk: vec![0] });
        // Scanning off exempts too.
        let off = r(false, &[], &[]);
        let d = decide(Some(&verdict(Action::Reject)), false, &[&off], &senders());
        assert_eq!(d, Decision { refuse: None, junk: vec![] });
    }

    #[test]
    fn soft_reject_and_greylist_are_451_and_greylist_never_junks() {
        let plain = r(true, &[], &[]);
        for a in [Action::SoftReject, Action::Greylist] {
            let d = decide(Some(&verdict(a)), false, &[&plain], &senders());
            assert_eq!(d.refuse.as_ref().map(|r| (r.code, r.enhanced)), Some((451, "4.7.1")));
        }
        let off = r(false, &[], &[]);
        let d = decide(Some(&verdict(Action::Greylist)), false, &[&plain, &off], &senders());
        assert_eq!(d, Decision { refuse: None, junk: vec![] });
        let d = decide(Some(&verdict(Action::SoftReject)), false, &[&plain, &off], &senders());
        assert_eq!(d, Decision { refuse: None, junk: vec![0] });
    }

    #[test]
    fn add_header_sends_judged_recipients_to_junk() {
        let plain = r(true, &[], &[]);
        let allowing = r(true, &["eve@spam.example"], &[]);
        for a in [Action::AddHeader, Action::RewriteSubject] {
            let d = decide(Some(&verdict(a)), false, &[&plain, &allowing], &senders());
            assert_eq!(d, Decision { refuse: None, junk: vec![0] });
        }
        let d = decide(Some(&verdict(Action::NoAction)), false, &[&plain, &allowing], &senders());
        assert_eq!(d, Decision { refuse: None, junk: vec![] });
    }

    #[test]
    fn blocked_senders_go_to_junk_even_unscanned_but_allowing_wins() {
        let blocking = r(false, &[], &["@spam.example"]);
        let both = r(true, &["eve@spam.example"], &["@spam.example"]);
        let d = decide(None, false, &[&blocking, &both], &senders());
        assert_eq!(d, Decision { refuse: None, junk: vec![0] });
        let d = decide(Some(&verdict(Action::NoAction)), false, &[&blocking, &both], &senders());
        assert_eq!(d, Decision { refuse: None, junk: vec![0] });
    }

    #[test]
    fn outbound_spam_is_refused_whatever_the_recipients_chose() {
        let off = r(false, &[], &[]);
        let d = decide(Some(&verdict(Action::Reject)), true, &[&off], &senders());
        assert_eq!(d.refuse.map(|r| r.code), Some(550));
        let d = decide(Some(&verdict(Action::SoftReject)), true, &[], &senders());
        assert_eq!(d.refuse.map(|r| r.code), Some(451));
        // Greylisting a submission with only remote recipients defers it too.
        let d = decide(Some(&verdict(Action::Greylist)), true, &[], &senders());
        assert_eq!(d.refuse.map(|r| r.code), Some(451));
    }

    #[test]
    fn rspamds_own_text_is_the_reply() {
        let mut v = verdict(Action::Reject);
        v.smtp_message = Some("Gtube pattern".into());
        let d = decide(Some(&v), false, &[&r(true, &[], &[])], &senders());
        assert_eq!(d.refuse.unwrap().lines, vec!["Gtube pattern".to_string()]);
    }

    #[test]
    fn headers_report_the_verdict_and_spam_headers_are_recognised() {
        let mut v = verdict(Action::AddHeader);
        v.add_headers = vec![("X-Spamd-Bar".into(), "+++".into())];
        let h = verdict_headers(&v);
        assert!(h.contains("X-Spamd-Bar: +++\r\n"), "{h}");
        assert!(h.contains("X-Spamd-Result: default: True [20.00 / 15.00]\r\n"), "{h}");
        assert!(h.contains("X-Spam-Status: Yes, score=20.00 required=15.00 action=add_header\r\n"), "{h}");
        for forged in ["X-Spam", "x-spam-status", "X-Spamd-Result", "X-Rspamd-Server"] {
            assert!(is_spam_header(forged), "{forged}");
        }
        assert!(!is_spam_header("X-Mailer"));
    }
}
