//! URLAUTH (RFC 4467) and URL-PARTIAL (RFC 5550): GENURLAUTH authorizes an IMAP URL of the
//! user's own message for others (another user, any logged-in user, anyone), URLFETCH reads the
//! message or part such a URL names, and RESETKEY withdraws every URL authorized before.
//!
//! Only the INTERNAL mechanism exists. Its tokens are made and checked by the mailbox service,
//! which keeps one access key per folder (see its `service::urlauth`); this file checks who may
//! use a URL and reads the bytes as a CATENATE URL is read (`session::append`).

use tern_proto::v1::{RecipientStatus, ResolveRecipientRequest, UrlAuthAction, UrlAuthRequest};

use super::{
    Flow, Session,
    response::{Code, Response},
};
use crate::urlauth::{Access, AuthorizedUrl, UrlAuthCommand, parse_authorized};

/// The one mechanism (RFC 4467 section 7).
const INTERNAL: &str = "INTERNAL";

impl Session {
    pub(crate) async fn urlauth(&mut self, command: UrlAuthCommand) -> Flow {
        match command {
            UrlAuthCommand::ResetKey { tag, mailbox, mechanisms } => {
                if mechanisms.iter().any(|m| !m.eq_ignore_ascii_case(INTERNAL)) {
                    return self.bad(&tag, "The only URLAUTH mechanism is INTERNAL");
                }
                let folder = match mailbox {
                    None => String::new(),
                    Some(raw) => match self.raw_mailbox_name(&raw) {
                        Some(name) => name,
                        None => return self.bad(&tag, "Invalid mailbox name"),
                    },
                };
                let account_id = self.account_id();
                let req =
                    UrlAuthRequest { account_id, folder, action: UrlAuthAction::Reset as i32, ..Default::default() };
                match self.client.url_auth(req).await {
                    Ok(_) => self.ok(&tag, "RESETKEY completed"),
                    Err(s) => self.failed(&tag, &s),
                }
            }
            UrlAuthCommand::GenUrlAuth { tag, urls } => {
                let mut made = Vec::with_capacity(urls.len());
                for (url, mechanism) in &urls {
                    match self.authorize(url, mechanism).await {
                        Ok(full) => made.push(full),
                        Err(why) => {
                            self.no_code(&tag, Code::BadUrl(url.clone()), why);
                            return Flow::Continue;
                        }
                    }
                }
                self.send(Response::GenUrlAuth(made));
                self.ok(&tag, "GENURLAUTH completed");
            }
            UrlAuthCommand::UrlFetch { tag, urls } => {
                let mut items = Vec::with_capacity(urls.len());
                for url in urls {
                    // A URL that cannot be used is answered NIL, without saying why (RFC 4467
                    // section 9), so that nobody learns which part of it was wrong.
                    let data = match self.fetch_authorized(&url).await {
                        Ok(data) => Some(data),
                        Err(why) => {
                            tracing::debug!(url = %url, why, "URLFETCH answered NIL");
                            None
                        }
                    };
                    items.push((url, data));
                }
                self.send(Response::UrlFetch(items));
                self.ok(&tag, "URLFETCH completed");
            }
        }
        Flow::Continue
    }

    /// Whether `user`, as a URL names it, is the logged-in user: the address, or its local part.
    fn is_me(&self, user: &str) -> bool {
        let address = self.account.as_ref().map(|a| a.address.as_str()).unwrap_or_default();
        user.eq_ignore_ascii_case(address) || address.split('@').next().is_some_and(|l| l.eq_ignore_ascii_case(user))
    }

    /// GENURLAUTH of one rump: the user's own mailbox, which must exist, and INTERNAL.
    async fn authorize(&mut self, url: &str, mechanism: &str) -> Result<String, String> {
        if !mechanism.eq_ignore_ascii_case(INTERNAL) {
            return Err("the only URLAUTH mechanism is INTERNAL".into());
        }
        let parsed = parse_authorized(url).map_err(|e| format!("not a URLAUTH URL rump: {e}"))?;
        if parsed.mechanism.is_some() {
            return Err("the URL is authorized already".into());
        }
        if !parsed.url.user.as_deref().is_some_and(|u| self.is_me(u)) {
            return Err("only the owner of a mailbox authorizes URLs of it".into());
        }
        let folder = parsed.url.mailbox.clone().unwrap_or_default();
        let req = UrlAuthRequest {
            account_id: self.account_id(),
            folder,
            action: UrlAuthAction::Sign as i32,
            rump: parsed.rump.clone(),
            token: String::new(),
        };
        let token = self.client.url_auth(req).await.map_err(|s| s.message().to_string())?.into_inner().token;
        Ok(format!("{}:{INTERNAL}:{token}", parsed.rump))
    }

    /// URLFETCH of one URL: who may use it, whether it has expired, whether its token is that
    /// of its owner's current key, and then what it names.
    pub(crate) async fn fetch_authorized(&mut self, url: &str) -> Result<Vec<u8>, String> {
        let parsed: AuthorizedUrl = parse_authorized(url).map_err(|e| e.to_string())?;
        let (Some(mechanism), Some(token)) = (&parsed.mechanism, &parsed.token) else {
            return Err("the URL carries no token".into());
        };
        if !mechanism.eq_ignore_ascii_case(INTERNAL) {
            return Err("unknown mechanism".into());
        }
        let allowed = match &parsed.access {
            Access::Anonymous | Access::AuthUser => true,
            Access::User(name) => self.is_me(name),
            // For a submission server, which an IMAP session is not.
            Access::Submit(_) => false,
        };
        if !allowed {
            return Err("the URL is not for this user".into());
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        if parsed.expire.is_some_and(|expire| expire <= now) {
            return Err("the URL has expired".into());
        }
        let owner = parsed.url.user.clone().unwrap_or_default();
        let owner_id = if self.is_me(&owner) { self.account_id() } else { self.account_of(&owner).await? };
        let folder = parsed.url.mailbox.clone().unwrap_or_default();
        let req = UrlAuthRequest {
            account_id: owner_id,
            folder: folder.clone(),
            action: UrlAuthAction::Verify as i32,
            rump: parsed.rump.clone(),
            token: token.clone(),
        };
        let valid = self.client.url_auth(req).await.map_err(|s| s.message().to_string())?.into_inner().valid;
        if !valid {
            return Err("the token is not valid".into());
        }
        self.url_content(owner_id, &folder, &parsed.url).await
    }

    /// The account whose primary address is `address`.
    async fn account_of(&mut self, address: &str) -> Result<u64, String> {
        let req = ResolveRecipientRequest { address: address.to_string() };
        let r = self.client.resolve_recipient(req).await.map_err(|s| s.message().to_string())?.into_inner();
        match r.account {
            Some(a) if r.status == RecipientStatus::Local as i32 && a.address.eq_ignore_ascii_case(address) => Ok(a.id),
            _ => Err("no such user".into()),
        }
    }
}
