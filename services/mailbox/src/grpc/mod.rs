//! The gRPC face of the mailbox service: the front-ends' API and the admin API, and the
//! conversions from stored records to API messages they share.
//!
//! This layer only translates: each RPC turns its request into one call of
//! [`crate::service::MailboxService`], which validates the input and calls the store, and
//! turns the answer into the response. Errors become statuses by `From` conversions, so every
//! RPC answers an error the same way: [`crate::MailboxError`]'s (in `error.rs`, with the
//! `tern-reason` front-ends rely on) and [`DkimKeyError`]'s below.

pub mod admin;
pub mod mailbox;

use tern_proto::v1::{Account, Folder, Pop3DeletePolicy, SpecialUse, Usage};
use tonic::Status;

use crate::{
    records::{AccountRecord, FolderRecord},
    service::DkimKeyError,
    store::UsageCount,
};

impl From<DkimKeyError> for Status {
    fn from(err: DkimKeyError) -> Self {
        match err {
            DkimKeyError::Mailbox(e) => e.into(),
            // A key that cannot be generated is the server's fault, with no reason a client
            // could act on; "internal" says so.
            DkimKeyError::Generate(detail) => Status::internal(detail),
        }
    }
}

pub(crate) fn account_pb(a: AccountRecord) -> Account {
    let pop3_delete = Pop3DeletePolicy::from(a.pop3_delete()) as i32;
    Account {
        id: a.id,
        address: a.address,
        display_name: a.display_name,
        quota_bytes: a.quota_bytes,
        suspended: a.suspended,
        aliases: a.aliases,
        pop3_delete,
        spam: a.spam.map(Into::into),
    }
}

pub(crate) fn folder_pb(f: FolderRecord, with_counts: bool) -> Folder {
    let special_use = SpecialUse::from(f.special_use()) as i32;
    let mut out = Folder {
        id: f.id,
        name: f.name,
        uidvalidity: f.uidvalidity,
        uidnext: f.uidnext,
        highest_modseq: f.highest_modseq,
        special_use,
        subscribed: f.subscribed,
        first_recent_uid: f.recent_uid,
        ..Default::default()
    };
    if with_counts {
        out.messages = f.messages;
        out.unseen = f.unseen;
        out.deleted = f.deleted;
        out.size = f.size;
    }
    out
}

pub(crate) fn usage_pb(a: &AccountRecord, u: UsageCount) -> Usage {
    Usage {
        account_id: a.id,
        address: a.address.clone(),
        messages: u.messages,
        bytes: u.bytes,
        quota_bytes: a.quota_bytes,
    }
}
