//! An rspamd of the test's own, for the spam filtering tests (issue #17): Debian's rspamd 3.4
//! (`rspamd`, which `cargo xtask ci` installs) with a Redis (`redis-server`) for its Bayes
//! statistics, both started in the foreground on free loopback ports, with their databases,
//! run directory and logs in a temporary directory. Whether a system-wide rspamd or Redis runs
//! does not matter.
//!
//! The configuration is `tests/rspamd/` of the workspace (`rspamd.conf` says how to run it by
//! hand): the packaged rules of /etc/rspamd, read but not changed, with a normal worker
//! ([`Rspamd::url`], `/checkv2`) and a controller ([`Rspamd::controller`], `/learnspam`,
//! `/learnham`, `/stat`, no password), per-user Bayes in the Redis, and no network: the modules
//! that ask DNS (DNS lists, SPF, DKIM, DMARC, ...) are off and rspamd's only name server is a
//! loopback port where nothing listens. Its thresholds are [`REJECT_SCORE`],
//! [`REWRITE_SUBJECT_SCORE`], [`ADD_HEADER_SCORE`] and [`GREYLIST_SCORE`].
//!
//! A test chooses the verdict in one of three ways:
//!
//! - a GTUBE pattern in a text part ([`GTUBE`] rejects, [`GTUBE_ADD_HEADER`],
//!   [`GTUBE_REWRITE_SUBJECT`] and [`GTUBE_NO_ACTION`] give those actions), which rspamd checks
//!   before anything else, so that not even a request's `Settings` header changes the outcome;
//! - the header [`ACTION_HEADER`] with an action's name (`soft reject`, `greylist`, ...), which
//!   forces it after the request's settings are applied, so a whitelisting `Settings` header
//!   still wins;
//! - the header [`SCORE_HEADER`] with a number, added to the score, so that the thresholds decide
//!   as they do for real mail. [`message`] writes messages that otherwise score -0.1.
//!
//! Bayes statistics are kept per user: the user is the request's `Deliver-To` header, else its
//! first `Rcpt` header, else the first address of the message's To. [`Rspamd::learned`] reads
//! back how many messages a user's statistics hold from Redis.
//!
//! The first start on a machine compiles rspamd's hyperscan databases, some 10 seconds; they are
//! kept in a cache directory shared by every run of the same user (see [`hyperscan_cache`]), and
//! later starts take about half a second. A running pair takes some 250 MB of memory.
//!
//! A missing or unusable rspamd or Redis fails the test with the package to install; it is never
//! skipped.

use std::{
    net::SocketAddr,
    ops::{Deref, DerefMut},
    time::{SystemTime, UNIX_EPOCH},
};

use tern_testbed::{HttpResponse, http_request, rspamd::redis_command};

pub use tern_testbed::rspamd::hyperscan_cache;

/// The GTUBE pattern: rspamd rejects a message with it in a text part, with the SMTP message
/// "Gtube pattern".
pub const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";
/// rspamd's GTUBE variant for the action "add header".
pub const GTUBE_ADD_HEADER: &str = "YJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";
/// rspamd's GTUBE variant for the action "rewrite subject".
pub const GTUBE_REWRITE_SUBJECT: &str = "ZJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";
/// rspamd's GTUBE variant for "no action", whatever else the message has.
pub const GTUBE_NO_ACTION: &str = "AJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

/// The message header whose value (`reject`, `soft reject`, `rewrite subject`, `add header`,
/// `greylist` or `no action`) forces that action, with the SMTP message
/// "Tern test action <action>" (tests/rspamd/tern.lua).
pub const ACTION_HEADER: &str = "X-Tern-Test-Action";
/// The message header whose value, a number, is added to the message's score as the symbol
/// `TERN_TEST_SCORE` (tests/rspamd/tern.lua).
pub const SCORE_HEADER: &str = "X-Tern-Test-Score";

/// The score from which rspamd says "reject".
pub const REJECT_SCORE: f64 = 15.0;
/// The score from which rspamd says "rewrite subject", proposing [`SUBJECT_PREFIX`] before the
/// subject.
pub const REWRITE_SUBJECT_SCORE: f64 = 10.0;
/// The score from which rspamd says "add header".
pub const ADD_HEADER_SCORE: f64 = 6.0;
/// The score from which rspamd says "greylist".
pub const GREYLIST_SCORE: f64 = 4.0;
/// What "rewrite subject" puts before the subject.
pub const SUBJECT_PREFIX: &str = "[SPAM] ";

/// A running rspamd and its Redis (`tern_testbed::rspamd::Rspamd`, whose fields and `stop`
/// it derefs to), with what the tests ask of them.
#[derive(Debug)]
pub struct Rspamd(tern_testbed::rspamd::Rspamd);

impl Deref for Rspamd {
    type Target = tern_testbed::rspamd::Rspamd;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Rspamd {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Rspamd {
    /// Starts Redis and rspamd and waits until both rspamd workers answer `/ping`. Panics,
    /// naming what to install, when it cannot.
    pub async fn start() -> Rspamd {
        let started = tokio::task::spawn_blocking(tern_testbed::rspamd::Rspamd::start)
            .await
            .expect("the thread starting rspamd panicked");
        Rspamd(started.unwrap_or_else(|e| panic!("{e:#}")))
    }

    /// Scans `message` with `/checkv2`, sending `headers` (`IP`, `From`, `Rcpt`, `Deliver-To`,
    /// `Settings`, ...), and returns rspamd's JSON answer. Panics unless rspamd answers 200.
    pub async fn check(&self, message: &[u8], headers: &[(&str, &str)]) -> serde_json::Value {
        let response = self.post(self.normal_addr, "/checkv2", message, headers).await;
        assert_eq!(response.status, 200, "/checkv2: {}\n{}", String::from_utf8_lossy(&response.body), self.log_tail());
        serde_json::from_slice(&response.body).expect("/checkv2 answers JSON")
    }

    /// Learns `message` as spam for `user` (the `Deliver-To` header) through the controller.
    /// Panics unless rspamd learns it (status 200).
    pub async fn learn_spam(&self, user: &str, message: &[u8]) {
        self.learn("/learnspam", user, message).await;
    }

    /// Learns `message` as ham for `user`, as [`Rspamd::learn_spam`] does spam.
    pub async fn learn_ham(&self, user: &str, message: &[u8]) {
        self.learn("/learnham", user, message).await;
    }

    async fn learn(&self, path: &str, user: &str, message: &[u8]) {
        let response = self.post(self.controller_addr, path, message, &[("Deliver-To", user)]).await;
        // 208 is "already learnt", 204 too few words for Bayes; both leave the counts alone.
        assert_eq!(
            response.status,
            200,
            "{path} for {user}: {} {:?}\n{}",
            String::from_utf8_lossy(&response.body),
            response.headers,
            self.log_tail()
        );
    }

    /// Posts `body` to `path` of the worker at `addr` and returns the response.
    pub async fn post(&self, addr: SocketAddr, path: &str, body: &[u8], headers: &[(&str, &str)]) -> HttpResponse {
        let target = path.to_string();
        let body = body.to_vec();
        let headers: Vec<(String, String)> = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        tokio::task::spawn_blocking(move || {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            http_request(addr, "POST", &target, &headers, &body)
        })
        .await
        .expect("the HTTP request's thread panicked")
        .unwrap_or_else(|e| panic!("POST {path} to rspamd at {addr}: {e}"))
    }

    /// How many messages `user`'s Bayes statistics hold, spam and ham together. A message learnt
    /// again as the other class moves from one count to the other; one learnt again as the same
    /// class is refused and not counted.
    pub async fn learned(&self, user: &str) -> u64 {
        let (spam, ham) = self.learned_spam_ham(user).await;
        spam + ham
    }

    /// How many spam and how many ham messages `user`'s Bayes statistics hold: the fields
    /// `learns_spam` and `learns_ham` of the Redis hash `RS<user>`, which rspamd 3.4 keeps per
    /// user (the sets `BAYES_SPAM_keys` and `BAYES_HAM_keys` list those hashes, and each token
    /// is a hash `RS<user>_<token>`). The controller's `/stat` does not tell users apart.
    pub async fn learned_spam_ham(&self, user: &str) -> (u64, u64) {
        let addr = self.redis_addr;
        let key = format!("RS{user}");
        let reply =
            tokio::task::spawn_blocking(move || redis_command(addr, &["HMGET", &key, "learns_spam", "learns_ham"]))
                .await
                .expect("the Redis request's thread panicked")
                .unwrap_or_else(|e| panic!("HMGET from Redis at {addr}: {e}"));
        let count = |value: Option<&String>| value.filter(|v| !v.is_empty()).map_or(0, |v| v.parse().unwrap_or(0));
        (count(reply.first()), count(reply.get(1)))
    }
}

/// A plain-text message from sender@remote.example to alice@example.com with `subject`, the
/// header fields `headers`, `text` as its body, the current date and a Message-ID no other
/// message of this process has (rspamd refuses to learn the same message twice). rspamd scores
/// it -0.1 (MIME_GOOD) unless `headers` or `text` add to that.
pub fn message(subject: &str, headers: &[(&str, &str)], text: &str) -> Vec<u8> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let id = format!("{}.{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let extra: String = headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
    format!(
        "From: Sender <sender@remote.example>\r\nTo: Alice <alice@example.com>\r\nSubject: {subject}\r\n\
         Date: {date}\r\nMessage-ID: <{id}@remote.example>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n{extra}\r\n{text}\r\n",
        date = rfc5322_date(SystemTime::now()),
    )
    .into_bytes()
}

/// Text that reads as spam, long enough for Bayes (rspamd learns nothing from fewer than 11
/// tokens); `n` makes each copy different.
pub fn spam_text(n: u64) -> String {
    format!(
        "Cheap watches and pills for everyone, buy now while the special offer lasts, limited time \
         only, click the link to claim your prize number {n} today."
    )
}

/// Text that reads as ham, long enough for Bayes; `n` makes each copy different.
pub fn ham_text(n: u64) -> String {
    format!(
        "Hello Alice, the quarterly report is attached, please review the budget figures before our \
         meeting number {n} with the finance team on Monday morning."
    )
}

/// `time` as an RFC 5322 date in UTC (`Sun, 06 Dec 2026 00:35:13 +0000`). rspamd adds a point
/// for a date more than a few hours away from its clock, and for a missing one.
pub fn rfc5322_date(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let (hour, minute, second) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    // 1970-01-01 was a Thursday.
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (never negative here).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let month =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"][month as usize - 1];
    format!("{weekday}, {day:02} {month} {year} {hour:02}:{minute:02}:{second:02} +0000")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn dates_are_written_as_rfc5322_wants_them() {
        assert_eq!(rfc5322_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 +0000");
        // 2000-02-29 (a leap day in a year divisible by 400) at 12:34:56.
        assert_eq!(rfc5322_date(UNIX_EPOCH + Duration::from_secs(951_827_696)), "Tue, 29 Feb 2000 12:34:56 +0000");
        assert_eq!(rfc5322_date(UNIX_EPOCH + Duration::from_secs(1_796_517_313)), "Sun, 06 Dec 2026 00:35:13 +0000");
    }

    #[test]
    fn messages_differ_and_carry_the_headers() {
        let a = String::from_utf8(message("s", &[(SCORE_HEADER, "7")], "text")).unwrap();
        let b = String::from_utf8(message("s", &[], "text")).unwrap();
        assert!(a.contains("\r\nX-Tern-Test-Score: 7\r\n\r\ntext\r\n"), "{a}");
        let mid = |m: &str| m.lines().find(|l| l.starts_with("Message-ID:")).unwrap().to_string();
        assert_ne!(mid(&a), mid(&b));
    }
}
