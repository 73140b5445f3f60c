//! Sieve at delivery (issue #18): for each recipient whose account has an active script, the
//! script runs on the message and its actions replace the plain "store in INBOX".
//!
//! The interpreter (`tern-sieve`) is a pure function that asks an environment what it needs;
//! here that environment is filled from storage before the run (the account's folders and
//! scripts) and, for the tracking keys a run asks about (vacation replies sent, `duplicate`
//! ids seen), by running again once the keys it missed have been read. A run is cheap and
//! deterministic, so a second pass asks the same questions and now gets the answers.
//!
//! Failures never lose mail: a script that does not compile or fails at run time (a limit,
//! `reject` with `fileinto`, a missing include) leaves the message in the folder it would have
//! gone to without a script, with a log line and a count in `tern_sieve_runs{result}`.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, OnceLock},
};

use bytes::Bytes;
use prometheus_client::metrics::{counter::Counter, family::Family};
use sha2::{Digest, Sha256};
use tern_proto::v1::{FolderRef, SpecialUse};
use tern_sieve::{Action, Environment, Input, Mark, Program, Reply, RunLimits};

use super::{MailboxService, now, sieve::ActiveSieve};
use crate::{
    error::{MailboxError, Result},
    folder_name,
    records::AccountRecord,
};

/// The header a redirect adds, naming the account that redirected (as Pigeonhole names it).
const REDIRECT_HEADER: &str = "X-Sieve-Redirected-From";

/// Whether `message` was redirected by `address` already.
fn redirected_by(message: &[u8], address: &str) -> bool {
    let parsed = tern_sieve::message::Parsed::new(message);
    parsed.raw_values(REDIRECT_HEADER).any(|raw| tern_sieve::message::decode_text(raw).eq_ignore_ascii_case(address))
}

/// The most compiled scripts kept; when full the cache starts again empty (scripts change
/// rarely and compile in well under a millisecond, so nothing cleverer pays).
const MAX_PROGRAMS: usize = 4096;

/// Compiled scripts by account and script name, each with the text it was compiled from: a
/// script edited since is compiled again (comparing the text costs less than hashing it).
#[derive(Debug, Clone, Default)]
pub(super) struct Programs(Arc<Mutex<HashMap<(u64, String), Compiled>>>);

/// A script's text and its program.
type Compiled = (String, Arc<Program>);

impl Programs {
    fn get(&self, account_id: u64, script: &ActiveSieve) -> std::result::Result<Arc<Program>, tern_sieve::Error> {
        let key = (account_id, script.name.clone());
        if let Some((text, p)) = self.0.lock().unwrap_or_else(|e| e.into_inner()).get(&key)
            && *text == script.text
        {
            return Ok(Arc::clone(p));
        }
        let program = Arc::new(tern_sieve::compile(&script.text)?);
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_PROGRAMS {
            cache.clear();
        }
        cache.insert(key, (script.text.clone(), Arc::clone(&program)));
        Ok(program)
    }
}

/// How often a run may be repeated to answer the tracking keys it asked about.
const MAX_PASSES: usize = 4;

/// What one recipient's script decided, ready to carry out.
#[derive(Debug, Default)]
pub(super) struct Decision {
    /// The folders to store into (existing or just created), each with its flags.
    pub stores: Vec<(String, Vec<String>)>,
    /// The message as `editheader` left it, when it changed it.
    pub message: Option<Bytes>,
    /// `reject` or `ereject`, with the reason.
    pub rejected: Option<String>,
    pub redirects: Vec<String>,
    pub vacation: Option<Reply>,
    /// Tracking keys (already hashed for the store) to record once the actions are done:
    /// `duplicate` ids, and the vacation reply's, which is claimed before the reply is sent.
    pub marks: Vec<(String, i64)>,
    pub vacation_mark: Option<(String, i64)>,
}

impl Decision {
    fn keep(folder: &str) -> Decision {
        Decision { stores: vec![(folder.to_string(), Vec::new())], ..Decision::default() }
    }
}

/// The metrics of Sieve at delivery, registered at first use.
#[derive(Debug, Clone)]
struct SieveMetrics {
    /// Runs by result: `ok`, `error` (a runtime error, the message kept) and `invalid` (the
    /// stored script no longer compiles, the message kept).
    runs: Family<ResultLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

impl SieveMetrics {
    fn global() -> &'static SieveMetrics {
        static METRICS: OnceLock<SieveMetrics> = OnceLock::new();
        METRICS.get_or_init(|| {
            let m = SieveMetrics { runs: Family::default() };
            for result in ["ok", "error", "invalid"] {
                let _ = m.runs.get_or_create(&ResultLabel { result });
            }
            tern_runtime::metrics::Metrics::global().register(
                "sieve_runs",
                "Sieve scripts run at delivery, by result (ok, error: kept after a runtime error, invalid: kept because the script does not compile)",
                m.runs.clone(),
            );
            m
        })
    }

    fn count(result: &'static str) {
        SieveMetrics::global().runs.get_or_create(&ResultLabel { result }).inc();
    }
}

/// Declares the metric, so that it reads 0 before the first delivery with a script.
pub(super) fn declare_metrics() {
    let _ = SieveMetrics::global();
}

/// The key a tracking record is stored under: per account, and hashed, because the
/// interpreter's keys hold handles and addresses of any length.
fn tracking_key(account_id: u64, key: &str) -> String {
    hex::encode(Sha256::digest(format!("sieve\u{0}{account_id}\u{0}{key}")))
}

/// What a run asked of its environment that had to be read first.
enum Missing {
    /// A tracking key.
    Seen(String),
    /// A global script, by name.
    Global(String),
}

/// The environment of one run: what storage said before it, and what it asked about without
/// an answer yet.
struct Prefetched<'a> {
    folders: &'a HashSet<String>,
    account: &'a AccountRecord,
    seen: &'a HashMap<String, bool>,
    /// Global scripts read so far: their text, or `None` for a name that has none.
    globals: &'a HashMap<String, Option<String>>,
    missing: Vec<Missing>,
}

impl Environment for Prefetched<'_> {
    fn mailbox_exists(&mut self, name: &str) -> bool {
        folder_name::is_inbox(name) || self.folders.contains(name)
    }

    fn seen(&mut self, key: &str) -> bool {
        match self.seen.get(key) {
            Some(&seen) => seen,
            None => {
                self.missing.push(Missing::Seen(key.to_string()));
                false
            }
        }
    }

    fn script(&mut self, name: &str, global: bool) -> Option<String> {
        if global {
            return match self.globals.get(name) {
                Some(text) => text.clone(),
                None => {
                    self.missing.push(Missing::Global(name.to_string()));
                    None
                }
            };
        }
        let sieve = self.account.sieve.as_ref()?;
        sieve.scripts.iter().find(|s| s.name == name).map(|s| s.text.clone())
    }
}

impl MailboxService {
    fn run_limits(&self) -> RunLimits {
        RunLimits {
            max_steps: self.limits.sieve_max_steps,
            max_actions: self.limits.sieve_max_actions,
            max_redirects: self.limits.sieve_max_redirects,
            vacation_min_period: self.limits.sieve_vacation_min_period.as_secs(),
            vacation_max_period: self.limits.sieve_vacation_max_period.as_secs(),
            ..RunLimits::default()
        }
    }

    /// Runs `script` for one recipient and turns its outcome into a [`Decision`]: folders
    /// resolved (created for `:create`, otherwise a missing one falls back to
    /// `default_folder`), INBOX meaning `default_folder` (the spam filter's choice for this
    /// recipient), and tracking keys hashed. Storage errors are errors; script errors are not.
    pub(super) async fn run_sieve(
        &self,
        account: &AccountRecord,
        script: &ActiveSieve,
        rcpt: &str,
        envelope: &super::Envelope,
        default_folder: &str,
        content: &Bytes,
    ) -> Result<Decision> {
        let program = match self.sieve_programs.get(account.id, script) {
            Ok(p) => p,
            Err(e) => {
                // Scripts are checked when stored, so this is a script stored before a
                // stricter compiler: the mail is kept and the owner can see why in the log.
                tracing::warn!(account = %account.address, script = %script.name, error = %e, "the active Sieve script does not compile; message kept");
                SieveMetrics::count("invalid");
                return Ok(Decision::keep(default_folder));
            }
        };
        // Only mailboxexists asks about folders while the script runs; fileinto's folder is
        // looked up afterwards, by name.
        let folders: HashSet<String> = if program.requires("mailbox") {
            self.store.list_folders(account.id).await?.folders.into_iter().map(|f| f.name).collect()
        } else {
            HashSet::new()
        };
        let input = Input {
            message: content,
            envelope_from: &envelope.mail_from,
            envelope_to: rcpt,
            original_to: None,
            // The spam filter's verdict, for spamtest (RFC 5235).
            spam_percent: envelope.spam_percent.map(|v| v.min(100) as u8),
            virus: None,
            now: now(),
        };
        let limits = self.run_limits();
        let mut seen: HashMap<String, bool> = HashMap::new();
        let mut globals: HashMap<String, Option<String>> = HashMap::new();
        let mut outcome = None;
        for _ in 0..MAX_PASSES {
            let mut env =
                Prefetched { folders: &folders, account, seen: &seen, globals: &globals, missing: Vec::new() };
            let run = program.run(&input, &mut env, &limits);
            let missing = std::mem::take(&mut env.missing);
            outcome = Some(run);
            if missing.is_empty() {
                break;
            }
            for m in missing {
                match m {
                    Missing::Seen(key) => {
                        let tracked = self.store.tracked(&tracking_key(account.id, &key), now()).await?;
                        seen.insert(key, tracked);
                    }
                    Missing::Global(name) => {
                        let text = self.global_script(&name).await;
                        globals.insert(name, text);
                    }
                }
            }
        }
        let outcome = outcome.expect("at least one pass");
        if let Some(error) = &outcome.error {
            tracing::warn!(account = %account.address, script = %script.name, %error, "the Sieve script failed; message kept");
            SieveMetrics::count("error");
        } else {
            SieveMetrics::count("ok");
        }
        let mut decision = Decision { message: outcome.message.map(Bytes::from), ..Decision::default() };
        for Mark { key, seconds } in &outcome.marks {
            let mark =
                (tracking_key(account.id, key), now().saturating_add(i64::try_from(*seconds).unwrap_or(i64::MAX)));
            if key.starts_with(tern_sieve::run::VACATION_KEY_PREFIX) {
                decision.vacation_mark = Some(mark);
            } else {
                decision.marks.push(mark);
            }
        }
        for action in outcome.actions {
            match action {
                Action::Store { mailbox, flags, create } => {
                    let folder = self.sieve_folder(account, &mailbox, create, default_folder).await?;
                    match decision.stores.iter_mut().find(|(f, _)| *f == folder) {
                        Some((_, existing)) => {
                            for flag in flags {
                                if !existing.iter().any(|f| f.eq_ignore_ascii_case(&flag)) {
                                    existing.push(flag);
                                }
                            }
                        }
                        None => decision.stores.push((folder, flags)),
                    }
                }
                Action::Redirect { address } => decision.redirects.push(address),
                Action::Reject { reason, .. } => decision.rejected = Some(reason),
                Action::Vacation(reply) => decision.vacation = Some(reply),
            }
        }
        // A message that went through this account's redirect before is in a loop: it stays
        // here instead of going round again (RFC 5228 section 4.2 asks for loop control).
        if !decision.redirects.is_empty() && redirected_by(content, &account.address) {
            tracing::info!(account = %account.address, "Sieve redirect loop; message kept instead");
            decision.redirects.clear();
            if decision.stores.is_empty() && decision.rejected.is_none() {
                decision.stores.push((default_folder.to_string(), Vec::new()));
            }
        }
        Ok(decision)
    }

    /// A global script's text, from `[sieve] global_dir`: `None` when there is no such
    /// directory, the name is not a plain file name, or the file is missing, unreadable or
    /// larger than a user's script may be.
    async fn global_script(&self, name: &str) -> Option<String> {
        let dir = self.limits.sieve_global_dir.as_ref()?;
        // A name is one file of the directory, never a path out of it.
        if super::sieve::check_name(name).is_err() || name.contains(['/', '\\']) || name.starts_with('.') {
            return None;
        }
        let path = dir.join(format!("{name}.sieve"));
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(t) => t,
            Err(e) => {
                tracing::info!(path = %path.display(), error = %e, "no global Sieve script");
                return None;
            }
        };
        (text.len() as u64 <= self.limits.sieve_max_script_bytes).then_some(text)
    }

    /// Sends a redirected message on, from the original envelope sender (RFC 5228 section
    /// 4.2), marked with the redirecting account so that a loop is noticed.
    pub(super) async fn redirect(
        &self,
        account: &AccountRecord,
        mail_from: &str,
        to: &str,
        message: Bytes,
    ) -> Result<()> {
        let mut marked = tern_mail::headers::field(REDIRECT_HEADER, &account.address).into_bytes();
        marked.extend_from_slice(&message);
        self.send_generated(account.id, mail_from, to, Bytes::from(marked)).await
    }

    /// Hands a message to one recipient: delivered here when the address is local (through
    /// the whole delivery, its Sieve script included), otherwise put on the outbound queue.
    async fn send_generated(&self, account_id: u64, mail_from: &str, to: &str, message: Bytes) -> Result<()> {
        let local = matches!(self.resolve(to).await, Ok(r) if r.status == tern_proto::v1::RecipientStatus::Local);
        if local {
            let envelope = super::Envelope {
                mail_from: mail_from.to_string(),
                recipients: vec![to.to_string()],
                ..super::Envelope::default()
            };
            let delivery = Box::pin(self.deliver_envelope(&envelope, message)).await?;
            if let Some(r) = delivery.results.first().filter(|r| r.status != tern_proto::v1::DeliveryStatus::Delivered)
            {
                tracing::info!(to, status = ?r.status, "a message Sieve sent was not stored");
            }
            return Ok(());
        }
        let entry = tern_proto::v1::QueuedMessage {
            mail_from: mail_from.to_string(),
            recipients: vec![tern_proto::v1::QueuedRecipient { address: to.to_string(), ..Default::default() }],
            account_id,
            ..Default::default()
        };
        self.enqueue(entry, message).await.map(|_| ())
    }

    /// What follows the stores: the vacation reply (from the null sender, RFC 5230 section
    /// 5) and the tracking records. Their failures cost a reply or a record, never the message,
    /// so they are logged.
    pub(super) async fn after_sieve(&self, account: &AccountRecord, rcpt: &str, content: &Bytes, decision: Decision) {
        for (key, until) in &decision.marks {
            if let Err(e) = self.store.track(key, now(), *until).await {
                tracing::warn!(account = %account.address, error = %e, "a Sieve tracking record was not written");
            }
        }
        let (Some(reply), Some((key, until))) = (&decision.vacation, &decision.vacation_mark) else { return };
        // The reply is sent by the delivery that records it: another one, on this replica or
        // another, that decided to reply to the same sender at the same moment finds the
        // record and stays silent.
        match self.store.track(key, now(), *until).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(account = %account.address, error = %e, "the vacation record was not written; no reply sent");
                return;
            }
        }
        let header = mail_parser::MessageParser::default().parse_headers(content);
        let references = header.as_ref().and_then(|m| m.header_raw("References")).map(|r| r.trim().to_string());
        let from = reply.from.clone().unwrap_or_else(|| account.address.clone());
        let domain = account.address.rsplit_once('@').map_or("localhost", |(_, d)| d);
        let bytes = tern_mail::autoreply::vacation(&tern_mail::autoreply::Vacation {
            from: &from,
            to: &reply.to,
            subject: &reply.subject,
            reason: &reply.reason,
            mime: reply.mime,
            in_reply_to: reply.in_reply_to.as_deref(),
            references: references.as_deref(),
            hostname: domain,
        });
        match self.send_generated(account.id, "", &reply.to, Bytes::from(bytes)).await {
            Ok(()) => {
                tracing::info!(account = %account.address, recipient = rcpt, to = %reply.to, "sent a vacation reply")
            }
            Err(e) => {
                tracing::warn!(account = %account.address, to = %reply.to, error = %e, "the vacation reply was not sent")
            }
        }
    }

    /// The folder a store of the script goes to.
    async fn sieve_folder(
        &self,
        account: &AccountRecord,
        mailbox: &str,
        create: bool,
        default_folder: &str,
    ) -> Result<String> {
        if folder_name::is_inbox(mailbox) {
            return Ok(default_folder.to_string());
        }
        let Ok(name) = folder_name::canonical(mailbox) else {
            tracing::info!(account = %account.address, folder = mailbox, "fileinto an invalid folder name; kept instead");
            return Ok(default_folder.to_string());
        };
        match self.store.folder(account.id, &FolderRef::name(name.clone())).await {
            Ok(f) => return Ok(f.name),
            Err(MailboxError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        if !create {
            // RFC 5228 section 4.1 leaves a missing mailbox to the implementation; keeping the
            // message where it would have gone loses nothing and surprises least.
            tracing::info!(account = %account.address, folder = %name, "fileinto a folder that does not exist; kept instead");
            return Ok(default_folder.to_string());
        }
        match self.store.create_folder(account.id, &name, SpecialUse::None).await {
            Ok(f) => Ok(f.name),
            Err(MailboxError::AlreadyExists { .. }) => Ok(name),
            Err(e @ (MailboxError::Invalid { .. } | MailboxError::NotAllowed(_))) => {
                tracing::info!(account = %account.address, folder = %name, error = %e, "fileinto :create refused; kept instead");
                Ok(default_folder.to_string())
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracking_keys_are_per_account_and_fixed_length() {
        let a = tracking_key(1, "vacation\u{0}x\u{0}a@b");
        assert_eq!(a.len(), 64);
        assert_ne!(a, tracking_key(2, "vacation\u{0}x\u{0}a@b"));
    }
}
