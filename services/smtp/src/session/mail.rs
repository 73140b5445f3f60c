//! MAIL FROM (RFC 5321 section 4.1.1.2): starts a transaction, within the message rates of the
//! client's address and of the sender, which are counted by the mailbox service for every
//! front-end together.

use super::{Flow, Session, Transaction};
use crate::{
    backend::Backend,
    codec::{MailParams, Path, Reply, command::Body},
    config::ListenerKind,
};

impl<B: Backend> Session<B> {
    pub(crate) async fn mail(&mut self, path: Path, params: MailParams) -> Flow {
        if self.helo.is_none() {
            return self.error(Reply::new(503, "5.5.1", "Say EHLO first"));
        }
        if self.txn.from.is_some() {
            return self.error(Reply::new(503, "5.5.1", "Nested MAIL command"));
        }
        if self.kind.is_submission() && self.account.is_none() {
            return self.error(Reply::new(530, "5.7.0", "Authentication required"));
        }
        if !self.esmtp && (params != MailParams::default()) {
            return self.error(Reply::new(555, "5.5.4", "Parameters need EHLO"));
        }
        if params.body == Body::BinaryMime {
            return self.error(Reply::new(555, "5.5.4", "BINARYMIME is not supported"));
        }
        if let Some(size) = params.size
            && size > self.cfg.limits.max_message_bytes
        {
            return self.error(Reply::new(
                552,
                "5.3.4",
                format!("Message size exceeds the limit of {} bytes", self.cfg.limits.max_message_bytes),
            ));
        }
        if let Some(addr) = path.address()
            && !params.smtputf8
            && !addr.is_ascii()
        {
            return self.error(Reply::new(553, "5.6.7", "Non-ASCII address requires SMTPUTF8"));
        }
        // A submitter sends as itself: its address or one of its aliases, never as anyone else.
        if let Some(account) = &self.account {
            match path.address() {
                Some(addr) if account.owns(addr) => {}
                Some(_) => {
                    return self.error(Reply::new(
                        553,
                        "5.7.1",
                        "Sender address is not owned by the authenticated user",
                    ));
                }
                None => return self.error(Reply::new(553, "5.7.1", "The null sender is not allowed for submission")),
            }
        }
        if let Some(reply) = self.over_rate(&path).await {
            return self.error(reply);
        }
        self.txn = Transaction { from: Some(path), params, ..Default::default() };
        self.reply(Reply::new(250, "2.1.0", "Sender OK"));
        Flow::Continue
    }
}

impl<B: Backend> Session<B> {
    /// The refusal when this message would pass a configured rate: per MX client address, and
    /// per sender (the envelope sender on MX, the account on submission). A rate that cannot
    /// be counted (the mailbox service unreachable) does not stop mail.
    async fn over_rate(&self, path: &Path) -> Option<Reply> {
        let limits = &self.cfg.limits;
        let window = limits.rate_window.as_secs().clamp(1, 86_400) as u32;
        let mut checks = Vec::new();
        if limits.max_messages_per_ip > 0 && self.kind == ListenerKind::Mx {
            checks.push((
                format!("smtp-ip:{}", client_key(self.peer.ip())),
                limits.max_messages_per_ip,
                "your address",
            ));
        }
        if limits.max_messages_per_sender > 0 {
            let sender = match (&self.account, path.address()) {
                (Some(a), _) => Some(format!("smtp-account:{}", a.address)),
                (None, Some(addr)) => Some(format!("smtp-sender:{}", addr.to_lowercase())),
                // Bounces (the null sender) are not limited per sender: there is none.
                (None, None) => None,
            };
            if let Some(key) = sender {
                checks.push((key, limits.max_messages_per_sender, "this sender"));
            }
        }
        for (key, limit, what) in checks {
            match self.backend.rate_limit(&key, limit, window).await {
                Ok((true, _)) => {}
                Ok((false, retry_after)) => {
                    tracing::info!(%key, limit, "message rate exceeded");
                    return Some(Reply::new(
                        450,
                        "4.7.1",
                        format!("Too many messages from {what}, try again in {retry_after} seconds"),
                    ));
                }
                Err(e) => tracing::warn!(%key, error = %e, "the message rate could not be counted"),
            }
        }
        None
    }
}

/// What a client address is counted as: itself, or for IPv6 its /64, which one host usually
/// has whole.
fn client_key(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}
