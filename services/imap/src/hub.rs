//! One event feed per account per front-end process, shared by all of that account's sessions.
//!
//! Each session used to hold its own Watch stream to the mailbox service; with thousands of
//! idle IMAP connections that is thousands of HTTP/2 streams and buffers. The hub keeps one
//! Watch per account and fans its events out to the sessions through a broadcast channel,
//! which costs a session a receiver and nothing more.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tern_proto::v1::{MailboxEvent, WatchRequest, mailbox_client::MailboxClient};
use tern_runtime::rpc::Channel;
use tokio::sync::broadcast::{self, error::TryRecvError};

/// Events a session may fall behind by before it must resynchronise.
const BACKLOG: usize = 1024;

/// What a session learns from the event feed.
#[derive(Debug)]
pub(crate) enum Update {
    Event(Arc<MailboxEvent>),
    /// The feed broke (a reconnect, or the session fell behind): resynchronise from the
    /// mailbox service before trusting the selected state again.
    Resync,
}

#[derive(Debug)]
pub(crate) struct Subscription(broadcast::Receiver<Arc<MailboxEvent>>);

impl Subscription {
    /// The next update already waiting, if any.
    pub fn try_next(&mut self) -> Option<Update> {
        match self.0.try_recv() {
            Ok(e) => Some(Update::Event(e)),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Lagged(_) | TryRecvError::Closed) => Some(Update::Resync),
        }
    }

    /// Waits for the next update.
    pub async fn next(&mut self) -> Update {
        match self.0.recv().await {
            Ok(e) => Update::Event(e),
            Err(_) => Update::Resync,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Hub {
    client: MailboxClient<Channel>,
    feeds: Arc<Mutex<HashMap<u64, broadcast::Sender<Arc<MailboxEvent>>>>>,
}

impl Hub {
    pub fn new(client: MailboxClient<Channel>) -> Self {
        Self { client, feeds: Default::default() }
    }

    /// Follows an account's changes: every change committed after this returns is delivered.
    pub(crate) async fn subscribe(&self, account: u64) -> Result<Subscription, tonic::Status> {
        {
            let feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(tx) = feeds.get(&account) {
                return Ok(Subscription(tx.subscribe()));
            }
        }
        // The Watch call is answered once the mailbox service has subscribed, so changes
        // committed after it returns are all in the stream.
        let mut stream = self.client.clone().watch(WatchRequest { account_id: account }).await?.into_inner();
        let (tx, rx) = broadcast::channel(BACKLOG);
        {
            let mut feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(existing) = feeds.get(&account) {
                // Another session set the feed up meanwhile; use that one.
                return Ok(Subscription(existing.subscribe()));
            }
            feeds.insert(account, tx.clone());
        }
        let feeds = self.feeds.clone();
        tokio::spawn(async move {
            let mut check = tokio::time::interval(Duration::from_secs(30));
            loop {
                tokio::select! {
                    msg = stream.message() => match msg {
                        Ok(Some(e)) => {
                            if tx.send(Arc::new(e)).is_err() {
                                break;
                            }
                        }
                        // The stream ended or broke: dropping the sender tells every session
                        // to resynchronise, and the next subscriber opens a new stream.
                        _ => break,
                    },
                    _ = check.tick() => {
                        if tx.receiver_count() == 0 {
                            break;
                        }
                    }
                }
            }
            let mut feeds = feeds.lock().unwrap_or_else(|e| e.into_inner());
            if feeds.get(&account).is_some_and(|t| t.same_channel(&tx)) {
                feeds.remove(&account);
            }
        });
        Ok(Subscription(rx))
    }
}
