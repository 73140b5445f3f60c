//! The `tern.mailbox.v1.Mailbox` service: the front-ends' API, a thin translation between
//! protobuf messages and [`MailboxService`], which validates every input (see the `service`
//! module). Besides translating, this layer only turns streamed bodies into one buffer and
//! back into chunks.

use std::{net::IpAddr, pin::Pin};

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use secrecy::SecretString;
use tern_proto::v1::{
    self as pb, AppendAllResponse, AppendHeader, AppendRequest, AppendResponse, AuthenticateRequest,
    AuthenticateResponse, ChangesRequest, ChangesResponse, ClaimRecentRequest, ClaimRecentResponse, CopyRequest,
    CopyResponse, CreateFolderRequest, CreateFolderResponse, DeleteFolderRequest, DeleteFolderResponse, DeliverRequest,
    DeliverResponse, EnqueueRequest, EnqueueResponse, ExpungeRequest, ExpungeResponse, FetchBodyRequest,
    FetchBodyResponse, FetchMessagesRequest, FetchMessagesResponse, FlagsMode, Folder, FolderRef, GetMetadataRequest,
    GetMetadataResponse, GetQuotaRequest, GetQuotaResponse, ListFoldersRequest, ListFoldersResponse, ListQueueRequest,
    ListQueueResponse, MailboxEvent, MessageMeta, MoveRequest, MoveResponse, QueuedMessage, RecipientResult,
    RenameFolderRequest, RenameFolderResponse, ResolveRecipientRequest, ResolveRecipientResponse, SelectRequest,
    SelectResponse, SetMetadataRequest, SetMetadataResponse, StatusRequest, StatusResponse, StoreFlagsRequest,
    StoreFlagsResponse, SubscribeFolderRequest, SubscribeFolderResponse, append_request, deliver_request,
    enqueue_request, mailbox_server::Mailbox,
};
use tonic::{Request, Response, Status, Streaming};

use super::{account_pb, folder_pb, usage_pb};
use crate::{
    error::MailboxError,
    metadata::Refusal,
    service::{AppendItem, FetchedMessage, MAX_APPEND_MESSAGES, MailboxService},
};

/// Bodies are streamed to clients in chunks of this size.
const CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct MailboxApi {
    service: MailboxService,
}

impl MailboxApi {
    pub fn new(service: MailboxService) -> Self {
        Self { service }
    }
}

type Rpc<T> = Result<Response<T>, Status>;
type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The folder a request names. Protobuf makes every message field optional, so a request
/// without one is malformed; it is refused here, before a streamed body is read.
fn folder_ref(f: Option<FolderRef>) -> Result<FolderRef, MailboxError> {
    f.filter(|f| f.by.is_some()).ok_or_else(|| MailboxError::invalid("folder", "no folder given"))
}

/// Collects a streamed body after its header, refusing it as soon as it passes `limit`.
async fn collect_body<T>(
    stream: &mut Streaming<T>,
    limit: u64,
    chunk_of: impl Fn(T) -> Option<Bytes>,
) -> Result<Bytes, Status> {
    let mut body = BytesMut::new();
    while let Some(msg) = stream.message().await? {
        let chunk = chunk_of(msg).ok_or_else(|| Status::invalid_argument("header sent twice"))?;
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(MailboxError::TooLarge { size: (body.len() + chunk.len()) as u64, limit }.into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

#[tonic::async_trait]
impl Mailbox for MailboxApi {
    #[tracing::instrument(skip_all, fields(user = %req.get_ref().username))]
    async fn authenticate(&self, req: Request<AuthenticateRequest>) -> Rpc<AuthenticateResponse> {
        let r = req.into_inner();
        let ip = r.remote_ip.parse::<IpAddr>().ok();
        let password = SecretString::from(r.password);
        let account = self.service.authenticate(&r.username, &password, ip).await?;
        Ok(Response::new(AuthenticateResponse { account: Some(account_pb(account)) }))
    }

    async fn resolve_recipient(&self, req: Request<ResolveRecipientRequest>) -> Rpc<ResolveRecipientResponse> {
        let (r, used_bytes) = self.service.resolve_recipient(&req.into_inner().address).await?;
        Ok(Response::new(ResolveRecipientResponse {
            used_bytes,
            status: r.status as i32,
            account: r.account.map(account_pb),
            via: r.via as i32,
            detail: r.detail,
            spam: Some(r.spam),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn deliver(&self, req: Request<Streaming<DeliverRequest>>) -> Rpc<DeliverResponse> {
        let mut stream = req.into_inner();
        let envelope = match stream.message().await?.and_then(|m| m.part) {
            Some(deliver_request::Part::Envelope(e)) => e,
            _ => return Err(Status::invalid_argument("the first message must carry the envelope")),
        };
        let limit = self.service.limits.max_message_bytes;
        if envelope.size_hint > limit {
            return Err(MailboxError::TooLarge { size: envelope.size_hint, limit }.into());
        }
        let body = collect_body(&mut stream, limit, |m| match m.part {
            Some(deliver_request::Part::Chunk(c)) => Some(c.into()),
            _ => None,
        })
        .await?;
        let delivery = crate::service::Envelope {
            mail_from: envelope.mail_from.clone(),
            recipients: envelope.recipients.clone(),
            junk: envelope.junk.clone(),
            spam_percent: envelope.spam_percent,
        };
        let d = self.service.deliver_envelope(&delivery, body).await?;
        tracing::info!(from = %envelope.mail_from, size = d.size, blob = %d.blob_id, "delivered");
        Ok(Response::new(DeliverResponse {
            blob_id: d.blob_id,
            size: d.size,
            results: d
                .results
                .into_iter()
                .map(|r| RecipientResult {
                    recipient: r.recipient,
                    status: r.status as i32,
                    account_id: r.account_id,
                    folder: r.appended.as_ref().map(|a| a.folder_name.clone()).unwrap_or_default(),
                    uidvalidity: r.appended.as_ref().map(|a| a.uidvalidity).unwrap_or_default(),
                    uid: r.appended.as_ref().map(|a| a.uid).unwrap_or_default(),
                    reason: r.reason,
                })
                .collect(),
        }))
    }

    async fn append(&self, req: Request<Streaming<AppendRequest>>) -> Rpc<AppendResponse> {
        let mut stream = req.into_inner();
        let header = match stream.message().await?.and_then(|m| m.part) {
            Some(append_request::Part::Header(h)) => h,
            _ => return Err(Status::invalid_argument("the first message must carry the header")),
        };
        let limit = self.service.limits.max_message_bytes;
        if header.size_hint > limit {
            return Err(MailboxError::TooLarge { size: header.size_hint, limit }.into());
        }
        let folder = folder_ref(header.folder)?;
        let body = collect_body(&mut stream, limit, |m| match m.part {
            Some(append_request::Part::Chunk(c)) => Some(c.into()),
            _ => None,
        })
        .await?;
        let a = self.service.append(header.account_id, folder, header.flags, header.internal_date, body).await?;
        Ok(Response::new(AppendResponse {
            folder_id: a.folder_id,
            uidvalidity: a.uidvalidity,
            uid: a.uid,
            modseq: a.modseq,
        }))
    }

    async fn append_all(&self, req: Request<Streaming<AppendRequest>>) -> Rpc<AppendAllResponse> {
        let mut stream = req.into_inner();
        let limit = self.service.limits.max_message_bytes;
        let mut target: Option<(u64, FolderRef)> = None;
        let mut messages: Vec<(AppendHeader, BytesMut)> = Vec::new();
        while let Some(part) = stream.message().await?.and_then(|m| m.part) {
            match part {
                append_request::Part::Header(h) => {
                    if h.size_hint > limit {
                        return Err(MailboxError::TooLarge { size: h.size_hint, limit }.into());
                    }
                    if messages.len() >= MAX_APPEND_MESSAGES {
                        let text = format!("more than {MAX_APPEND_MESSAGES} messages in one append");
                        return Err(Status::invalid_argument(text));
                    }
                    let folder = folder_ref(h.folder.clone())?;
                    match &target {
                        None => target = Some((h.account_id, folder)),
                        Some(t) if *t == (h.account_id, folder) => {}
                        Some(_) => {
                            return Err(Status::invalid_argument("every message of one append goes to one folder"));
                        }
                    }
                    messages.push((h, BytesMut::new()));
                }
                append_request::Part::Chunk(c) => {
                    let Some((_, body)) = messages.last_mut() else {
                        return Err(Status::invalid_argument("the first message must carry the header"));
                    };
                    if (body.len() + c.len()) as u64 > limit {
                        return Err(MailboxError::TooLarge { size: (body.len() + c.len()) as u64, limit }.into());
                    }
                    body.extend_from_slice(&c);
                }
            }
        }
        let Some((account_id, folder)) = target else {
            return Err(Status::invalid_argument("no message to append"));
        };
        let messages = messages
            .into_iter()
            .map(|(h, body)| AppendItem {
                flags: h.flags,
                internal_date: h.internal_date,
                content: body.freeze(),
                uid: h.uid,
                ignore_quota: h.ignore_quota,
            })
            .collect();
        let appended = self.service.append_all(account_id, folder, messages).await?;
        Ok(Response::new(AppendAllResponse {
            appended: appended
                .into_iter()
                .map(|a| AppendResponse {
                    folder_id: a.folder_id,
                    uidvalidity: a.uidvalidity,
                    uid: a.uid,
                    modseq: a.modseq,
                })
                .collect(),
        }))
    }

    async fn get_metadata(&self, req: Request<GetMetadataRequest>) -> Rpc<GetMetadataResponse> {
        let r = req.into_inner();
        let entries = self.service.get_metadata(r.account_id, &r.folder).await?;
        Ok(Response::new(GetMetadataResponse {
            entries: entries.into_iter().map(|e| pb::MetadataEntry { name: e.name, value: e.value }).collect(),
        }))
    }

    async fn set_metadata(&self, req: Request<SetMetadataRequest>) -> Rpc<SetMetadataResponse> {
        let r = req.into_inner();
        let changes = r.changes.into_iter().map(|c| (c.name, (!c.remove).then_some(c.value))).collect();
        Ok(Response::new(match self.service.set_metadata(r.account_id, &r.folder, changes).await? {
            None => SetMetadataResponse::default(),
            Some(Refusal::MaxSize(limit)) => SetMetadataResponse { max_size: limit, too_many: false },
            Some(Refusal::TooMany) => SetMetadataResponse { max_size: 0, too_many: true },
        }))
    }

    async fn url_auth(&self, req: Request<pb::UrlAuthRequest>) -> Rpc<pb::UrlAuthResponse> {
        let r = req.into_inner();
        let mut out = pb::UrlAuthResponse::default();
        match pb::UrlAuthAction::try_from(r.action).unwrap_or_default() {
            pb::UrlAuthAction::Sign => out.token = self.service.sign_url(r.account_id, &r.folder, &r.rump).await?,
            pb::UrlAuthAction::Verify => {
                out.valid = self.service.verify_url(r.account_id, &r.folder, &r.rump, &r.token).await?;
            }
            pb::UrlAuthAction::Reset => self.service.reset_url_keys(r.account_id, &r.folder).await?,
            pb::UrlAuthAction::Unspecified => return Err(Status::invalid_argument("no URLAUTH action given")),
        }
        Ok(Response::new(out))
    }

    async fn list_folders(&self, req: Request<ListFoldersRequest>) -> Rpc<ListFoldersResponse> {
        let r = req.into_inner();
        let list = self.service.list_folders(r.account_id).await?;
        Ok(Response::new(ListFoldersResponse {
            folders: list.folders.into_iter().map(|f| folder_pb(f, r.with_status)).collect(),
            subscribed_without_folder: list.subscribed_without_folder,
        }))
    }

    async fn create_folder(&self, req: Request<CreateFolderRequest>) -> Rpc<CreateFolderResponse> {
        let r = req.into_inner();
        let special_use = pb::SpecialUse::try_from(r.special_use).unwrap_or_default();
        let f = self.service.import_folder(r.account_id, &r.name, special_use, r.uidvalidity).await?;
        Ok(Response::new(CreateFolderResponse { folder: Some(folder_pb(f, true)) }))
    }

    async fn delete_folder(&self, req: Request<DeleteFolderRequest>) -> Rpc<DeleteFolderResponse> {
        let r = req.into_inner();
        self.service.delete_folder(r.account_id, &r.name).await?;
        Ok(Response::new(DeleteFolderResponse {}))
    }

    async fn rename_folder(&self, req: Request<RenameFolderRequest>) -> Rpc<RenameFolderResponse> {
        let r = req.into_inner();
        let f = self.service.rename_folder(r.account_id, &r.from, &r.to).await?;
        Ok(Response::new(RenameFolderResponse { folder: Some(folder_pb(f, true)) }))
    }

    async fn subscribe_folder(&self, req: Request<SubscribeFolderRequest>) -> Rpc<SubscribeFolderResponse> {
        let r = req.into_inner();
        self.service.subscribe_folder(r.account_id, &r.name, r.subscribed).await?;
        Ok(Response::new(SubscribeFolderResponse {}))
    }

    async fn select(&self, req: Request<SelectRequest>) -> Rpc<SelectResponse> {
        let r = req.into_inner();
        let (f, messages) = self.service.select(r.account_id, folder_ref(r.folder)?).await?;
        Ok(Response::new(SelectResponse { folder: Some(folder_pb(f, true)), messages }))
    }

    async fn status(&self, req: Request<StatusRequest>) -> Rpc<StatusResponse> {
        let r = req.into_inner();
        let s = self.service.status(r.account_id, folder_ref(r.folder)?).await?;
        let folder = Folder { recent: s.recent, first_recent_uid: s.first_recent_uid, ..folder_pb(s.folder, true) };
        Ok(Response::new(StatusResponse { folder: Some(folder) }))
    }

    async fn claim_recent(&self, req: Request<ClaimRecentRequest>) -> Rpc<ClaimRecentResponse> {
        let r = req.into_inner();
        let first_recent_uid = self.service.claim_recent(r.account_id, r.folder_id, r.up_to).await?;
        Ok(Response::new(ClaimRecentResponse { first_recent_uid }))
    }

    async fn fetch_messages(&self, req: Request<FetchMessagesRequest>) -> Rpc<FetchMessagesResponse> {
        let r = req.into_inner();
        let found = self
            .service
            .fetch_messages(r.account_id, r.folder_id, &r.uids, r.with_structure, r.inline_body_limit)
            .await?;
        let messages = found
            .into_iter()
            .map(|FetchedMessage { record: m, parsed, raw }| {
                let (envelope, body) = parsed.map(|p| p.into_api()).unwrap_or_default();
                MessageMeta {
                    has_raw: raw.is_some(),
                    raw: raw.map(|b| b.to_vec()).unwrap_or_default(),
                    uid: m.uid,
                    flags: m.flags,
                    modseq: m.modseq,
                    size: m.size,
                    internal_date: m.internal_date,
                    blob_id: m.blob_id,
                    email_id: format!("M{:016x}", m.email_id),
                    save_date: m.save_date,
                    envelope,
                    body,
                }
            })
            .collect();
        Ok(Response::new(FetchMessagesResponse { messages }))
    }

    type FetchBodyStream = BoxStream<FetchBodyResponse>;

    async fn fetch_body(&self, req: Request<FetchBodyRequest>) -> Rpc<Self::FetchBodyStream> {
        let r = req.into_inner();
        let m = self.service.message(r.account_id, r.folder_id, r.uid).await?;
        let body = self.service.body(&m, r.offset, r.length).await?;
        let mut chunks = body_chunks(body);
        if let Some(Ok(first)) = chunks.first_mut() {
            first.total_size = m.size;
        }
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    async fn search_text(
        &self,
        req: Request<tern_proto::v1::SearchTextRequest>,
    ) -> Rpc<tern_proto::v1::SearchTextResponse> {
        use tern_proto::v1::{SearchTextResponse, SearchTextResult, TextField};
        let r = req.into_inner();
        let mut keys = Vec::with_capacity(r.keys.len());
        for k in r.keys {
            let needle = tern_mail::text::needle(k.needle.as_bytes());
            keys.push(match TextField::try_from(k.field) {
                Ok(TextField::Body) => tern_mail::text::TextKey::Body(needle),
                Ok(TextField::Text) => tern_mail::text::TextKey::Text(needle),
                Ok(TextField::Header) if !k.header.is_empty() => {
                    tern_mail::text::TextKey::Header { name: k.header, needle }
                }
                _ => return Err(Status::invalid_argument("a search key needs a field (and a header name for HEADER)")),
            });
        }
        let found = self.service.search_text(r.account_id, r.folder_id, &keys).await?;
        Ok(Response::new(SearchTextResponse {
            results: found.results.into_iter().map(|uids| SearchTextResult { uids }).collect(),
            indexed: found.indexed,
            scanned: found.scanned,
        }))
    }

    async fn store_flags(&self, req: Request<StoreFlagsRequest>) -> Rpc<StoreFlagsResponse> {
        let r = req.into_inner();
        let mode = FlagsMode::try_from(r.mode).unwrap_or_default();
        let o = self.service.store_flags(r.account_id, r.folder_id, &r.uids, mode, r.flags, r.unchanged_since).await?;
        Ok(Response::new(StoreFlagsResponse {
            updated: o.updated,
            modified: o.modified,
            highest_modseq: o.highest_modseq,
        }))
    }

    async fn copy(&self, req: Request<CopyRequest>) -> Rpc<CopyResponse> {
        let r = req.into_inner();
        let dest = folder_ref(r.destination)?;
        let o = self.service.copy_messages(r.account_id, r.folder_id, &r.uids, dest).await?;
        Ok(Response::new(CopyResponse {
            uidvalidity: o.uidvalidity,
            source_uids: o.source_uids,
            destination_uids: o.destination_uids,
            destination_folder_id: o.destination_folder_id,
        }))
    }

    async fn r#move(&self, req: Request<MoveRequest>) -> Rpc<MoveResponse> {
        let r = req.into_inner();
        let dest = folder_ref(r.destination)?;
        let o = self.service.move_messages(r.account_id, r.folder_id, &r.uids, dest).await?;
        Ok(Response::new(MoveResponse {
            uidvalidity: o.uidvalidity,
            source_uids: o.source_uids,
            destination_uids: o.destination_uids,
            destination_folder_id: o.destination_folder_id,
            highest_modseq: o.highest_modseq,
        }))
    }

    async fn expunge(&self, req: Request<ExpungeRequest>) -> Rpc<ExpungeResponse> {
        let r = req.into_inner();
        let uids = (!r.uids.is_empty()).then_some(r.uids.as_slice());
        let (expunged, highest_modseq) = self.service.expunge(r.account_id, r.folder_id, uids, r.only_deleted).await?;
        Ok(Response::new(ExpungeResponse { expunged, highest_modseq }))
    }

    async fn changes(&self, req: Request<ChangesRequest>) -> Rpc<ChangesResponse> {
        let r = req.into_inner();
        let c = self.service.changes(r.account_id, r.folder_id, r.since_modseq).await?;
        Ok(Response::new(ChangesResponse {
            uidvalidity: c.uidvalidity,
            highest_modseq: c.highest_modseq,
            changed: c.changed,
            vanished: c.vanished,
        }))
    }

    type WatchStream = BoxStream<MailboxEvent>;

    async fn watch(&self, req: Request<pb::WatchRequest>) -> Rpc<Self::WatchStream> {
        let events = self.service.watch(req.into_inner().account_id).await?;
        Ok(Response::new(Box::pin(events.map(Ok))))
    }

    async fn enqueue(&self, req: Request<Streaming<EnqueueRequest>>) -> Rpc<EnqueueResponse> {
        let mut stream = req.into_inner();
        let envelope = match stream.message().await?.and_then(|m| m.part) {
            Some(enqueue_request::Part::Envelope(e)) => e,
            _ => return Err(Status::invalid_argument("the first message must carry the envelope")),
        };
        let limit = self.service.limits.max_message_bytes;
        if envelope.size_hint > limit {
            return Err(MailboxError::TooLarge { size: envelope.size_hint, limit }.into());
        }
        let body = collect_body(&mut stream, limit, |m| match m.part {
            Some(enqueue_request::Part::Chunk(c)) => Some(c.into()),
            _ => None,
        })
        .await?;
        let entry = QueuedMessage {
            mail_from: envelope.mail_from,
            recipients: envelope.recipients,
            account_id: envelope.account_id,
            ret: envelope.ret,
            envid: envelope.envid,
            ..Default::default()
        };
        let queued = self.service.enqueue(entry, body).await?;
        for q in &queued {
            tracing::info!(queue_id = %q.queue_id, from = %q.mail_from, domain = %q.domain, recipients = q.recipients.len(), "queued for relay");
        }
        let queue_ids: Vec<String> = queued.into_iter().map(|q| q.queue_id).collect();
        Ok(Response::new(EnqueueResponse { queue_id: queue_ids.first().cloned().unwrap_or_default(), queue_ids }))
    }

    async fn claim_queue(&self, req: Request<pb::ClaimQueueRequest>) -> Rpc<pb::ClaimQueueResponse> {
        let r = req.into_inner();
        let messages = self.service.claim_queue(&r.holder, r.max as usize, i64::from(r.lease_seconds)).await?;
        Ok(Response::new(pb::ClaimQueueResponse { messages }))
    }

    async fn finish_queued(&self, req: Request<pb::FinishQueuedRequest>) -> Rpc<pb::FinishQueuedResponse> {
        let r = req.into_inner();
        self.service.finish_queued(&r.queue_id, &r.holder, r.retry).await?;
        Ok(Response::new(pb::FinishQueuedResponse {}))
    }

    type FetchQueuedBodyStream = BoxStream<FetchBodyResponse>;

    async fn fetch_queued_body(&self, req: Request<pb::FetchQueuedBodyRequest>) -> Rpc<Self::FetchQueuedBodyStream> {
        let body = self.service.queued_body(&req.into_inner().queue_id).await?;
        Ok(Response::new(Box::pin(futures::stream::iter(body_chunks(body)))))
    }

    async fn get_signing_key(&self, req: Request<pb::GetSigningKeyRequest>) -> Rpc<pb::GetSigningKeyResponse> {
        let (selector, private_key_pem) = self.service.signing_key(&req.into_inner().domain).await?;
        Ok(Response::new(pb::GetSigningKeyResponse { selector, private_key_pem }))
    }

    async fn list_queue(&self, _req: Request<ListQueueRequest>) -> Rpc<ListQueueResponse> {
        Ok(Response::new(ListQueueResponse { messages: self.service.list_queue().await? }))
    }

    async fn rate_limit(&self, req: Request<pb::RateLimitRequest>) -> Rpc<pb::RateLimitResponse> {
        let r = req.into_inner();
        let (allowed, count, retry_after_secs) =
            self.service.rate_limit(&r.key, r.limit, r.window_secs, r.cost).await?;
        Ok(Response::new(pb::RateLimitResponse { allowed, count, retry_after_secs }))
    }

    async fn acquire_lease(&self, req: Request<pb::AcquireLeaseRequest>) -> Rpc<pb::AcquireLeaseResponse> {
        let r = req.into_inner();
        let ttl = std::time::Duration::from_secs(u64::from(r.ttl_seconds.max(1)));
        let granted = self.service.acquire_lease(r.account_id, &r.name, &r.holder, ttl)?;
        Ok(Response::new(pb::AcquireLeaseResponse {
            granted,
            expires_in: if granted { ttl.as_secs() as u32 } else { 0 },
        }))
    }

    async fn release_lease(&self, req: Request<pb::ReleaseLeaseRequest>) -> Rpc<pb::ReleaseLeaseResponse> {
        let r = req.into_inner();
        self.service.release_lease(r.account_id, &r.name, &r.holder);
        Ok(Response::new(pb::ReleaseLeaseResponse {}))
    }

    async fn get_quota(&self, req: Request<GetQuotaRequest>) -> Rpc<GetQuotaResponse> {
        let (account, usage) = self.service.quota(req.into_inner().account_id).await?;
        Ok(Response::new(GetQuotaResponse { usage: Some(usage_pb(&account, usage)) }))
    }

    async fn list_sieve_scripts(&self, req: Request<pb::ListSieveScriptsRequest>) -> Rpc<pb::ListSieveScriptsResponse> {
        let scripts = self.service.list_sieve_scripts(req.into_inner().account_id).await?;
        Ok(Response::new(pb::ListSieveScriptsResponse {
            scripts: scripts
                .into_iter()
                .map(|s| pb::SieveScript { name: s.name, active: s.active, size: s.size })
                .collect(),
        }))
    }

    async fn get_sieve_script(&self, req: Request<pb::GetSieveScriptRequest>) -> Rpc<pb::GetSieveScriptResponse> {
        let r = req.into_inner();
        let (text, active) = self.service.sieve_script(r.account_id, &r.name).await?;
        Ok(Response::new(pb::GetSieveScriptResponse { text, active }))
    }

    async fn put_sieve_script(&self, req: Request<pb::PutSieveScriptRequest>) -> Rpc<pb::PutSieveScriptResponse> {
        let r = req.into_inner();
        self.service.put_sieve_script(r.account_id, &r.name, r.text, r.activate).await?;
        Ok(Response::new(pb::PutSieveScriptResponse {}))
    }

    async fn check_sieve_script(&self, req: Request<pb::CheckSieveScriptRequest>) -> Rpc<pb::CheckSieveScriptResponse> {
        self.service.check_sieve_script(&req.into_inner().text)?;
        Ok(Response::new(pb::CheckSieveScriptResponse {}))
    }

    async fn delete_sieve_script(
        &self,
        req: Request<pb::DeleteSieveScriptRequest>,
    ) -> Rpc<pb::DeleteSieveScriptResponse> {
        let r = req.into_inner();
        self.service.delete_sieve_script(r.account_id, &r.name).await?;
        Ok(Response::new(pb::DeleteSieveScriptResponse {}))
    }

    async fn rename_sieve_script(
        &self,
        req: Request<pb::RenameSieveScriptRequest>,
    ) -> Rpc<pb::RenameSieveScriptResponse> {
        let r = req.into_inner();
        self.service.rename_sieve_script(r.account_id, &r.from, &r.to).await?;
        Ok(Response::new(pb::RenameSieveScriptResponse {}))
    }

    async fn set_active_sieve_script(
        &self,
        req: Request<pb::SetActiveSieveScriptRequest>,
    ) -> Rpc<pb::SetActiveSieveScriptResponse> {
        let r = req.into_inner();
        self.service.set_active_sieve_script(r.account_id, &r.name).await?;
        Ok(Response::new(pb::SetActiveSieveScriptResponse {}))
    }

    async fn have_sieve_space(&self, req: Request<pb::HaveSieveSpaceRequest>) -> Rpc<pb::HaveSieveSpaceResponse> {
        let r = req.into_inner();
        self.service.have_sieve_space(r.account_id, &r.name, r.size).await?;
        Ok(Response::new(pb::HaveSieveSpaceResponse {}))
    }
}

/// A body as FetchBody answers it: in chunks, the first one carrying the whole size (callers
/// of a range overwrite it with the message's size).
fn body_chunks(body: Bytes) -> Vec<Result<FetchBodyResponse, Status>> {
    let total = body.len() as u64;
    if body.is_empty() {
        return vec![Ok(FetchBodyResponse { chunk: Default::default(), total_size: total })];
    }
    (0..body.len())
        .step_by(CHUNK)
        .map(|at| {
            let chunk = body.slice(at..(at + CHUNK).min(body.len()));
            Ok(FetchBodyResponse { chunk: chunk.to_vec(), total_size: if at == 0 { total } else { 0 } })
        })
        .collect()
}
