//! The gRPC face of the mailbox service: the front-ends' API and the admin API, and the
//! conversions from stored records to API messages they share.

pub mod admin;
pub mod mailbox;

use tern_proto::v1::{Account, Folder, Usage};

use crate::{
    records::{AccountRecord, FolderRecord},
    store::UsageCount,
};

pub(crate) fn account_pb(a: AccountRecord) -> Account {
    Account {
        id: a.id,
        address: a.address,
        display_name: a.display_name,
        quota_bytes: a.quota_bytes,
        suspended: a.suspended,
        aliases: a.aliases,
        pop3_delete: a.pop3_delete,
    }
}

pub(crate) fn folder_pb(f: FolderRecord, with_counts: bool) -> Folder {
    let mut out = Folder {
        id: f.id,
        name: f.name,
        uidvalidity: f.uidvalidity,
        uidnext: f.uidnext,
        highest_modseq: f.highest_modseq,
        special_use: f.special_use,
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
