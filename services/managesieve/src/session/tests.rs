//! The session over a real loopback connection, with the mailbox service stood in for by an
//! in-memory backend that keeps the rules the service promises (one active script, ACTIVE on
//! deleting it, ALREADYEXISTS on renaming onto a name, NONEXISTENT), so that the protocol
//! side is tested alone; the transcripts of `tests/transcripts/managesieve` run it against the
//! real service.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use tern_runtime::stream::Stream;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};

use super::Session;
use crate::{
    backend::{Account, Backend, BackendError, ScriptEntry},
    config::{Limits, ManageSieveConfig},
};

#[derive(Debug, Default)]
struct Memory {
    scripts: Mutex<BTreeMap<String, String>>,
    active: Mutex<Option<String>>,
}

#[async_trait]
impl Backend for Memory {
    async fn authenticate(&self, user: &str, password: &SecretString, _ip: IpAddr) -> Result<Account, BackendError> {
        match (user, password.expose_secret()) {
            ("alice@example.com", "alice-pw") => Ok(Account { id: 1, address: user.into() }),
            ("down@example.com", _) => Err(BackendError::Unavailable("no mailbox service".into())),
            _ => Err(BackendError::AuthFailed),
        }
    }

    async fn list(&self, _account: u64) -> Result<Vec<ScriptEntry>, BackendError> {
        let active = self.active.lock().unwrap().clone();
        let scripts = self.scripts.lock().unwrap();
        Ok(scripts.keys().map(|n| ScriptEntry { name: n.clone(), active: active.as_ref() == Some(n) }).collect())
    }

    async fn get(&self, _account: u64, name: &str) -> Result<String, BackendError> {
        self.scripts.lock().unwrap().get(name).cloned().ok_or(BackendError::NonExistent("no such script".into()))
    }

    async fn put(&self, _account: u64, name: &str, script: &str) -> Result<(), BackendError> {
        self.check(script).await?;
        self.scripts.lock().unwrap().insert(name.into(), script.into());
        Ok(())
    }

    async fn check(&self, script: &str) -> Result<(), BackendError> {
        tern_sieve_check(script)
    }

    async fn delete(&self, _account: u64, name: &str) -> Result<(), BackendError> {
        if self.active.lock().unwrap().as_deref() == Some(name) {
            return Err(BackendError::Active("the script is active".into()));
        }
        self.scripts.lock().unwrap().remove(name).map(|_| ()).ok_or(BackendError::NonExistent("no such script".into()))
    }

    async fn rename(&self, _account: u64, old: &str, new: &str) -> Result<(), BackendError> {
        let mut scripts = self.scripts.lock().unwrap();
        if scripts.contains_key(new) {
            return Err(BackendError::AlreadyExists("the name is taken".into()));
        }
        let script = scripts.remove(old).ok_or(BackendError::NonExistent("no such script".into()))?;
        scripts.insert(new.into(), script);
        let mut active = self.active.lock().unwrap();
        if active.as_deref() == Some(old) {
            *active = Some(new.into());
        }
        Ok(())
    }

    async fn set_active(&self, _account: u64, name: &str) -> Result<(), BackendError> {
        if name.is_empty() {
            *self.active.lock().unwrap() = None;
            return Ok(());
        }
        if !self.scripts.lock().unwrap().contains_key(name) {
            return Err(BackendError::NonExistent("no such script".into()));
        }
        *self.active.lock().unwrap() = Some(name.into());
        Ok(())
    }

    async fn have_space(&self, _account: u64, _name: &str, size: u64) -> Result<(), BackendError> {
        if size > 1000 { Err(BackendError::OverQuota("over quota".into())) } else { Ok(()) }
    }
}

/// The stand-in's syntax check: a script must end with `;` or `}` (the real one is the mailbox
/// service's, with tern-sieve).
fn tern_sieve_check(script: &str) -> Result<(), BackendError> {
    let t = script.trim_end();
    if t.is_empty() || t.ends_with(';') || t.ends_with('}') {
        Ok(())
    } else {
        Err(BackendError::Invalid(format!("line {}: expected ';'", script.lines().count().max(1))))
    }
}

const PLAIN_ALICE: &str = "AGFsaWNlQGV4YW1wbGUuY29tAGFsaWNlLXB3";

/// Serves one session on a loopback port and returns the client's side of it.
async fn connect(limits: Limits) -> TcpStream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = Arc::new(ManageSieveConfig { limits, tls: None, allow_plaintext_auth: true });
    tokio::spawn(async move {
        let (tcp, peer) = listener.accept().await.unwrap();
        let (_tx, rx) = watch::channel(false);
        let session = Session::new(cfg, Arc::new(Memory::default()), Stream::Plain(tcp), peer, Default::default(), rx);
        session.run().await;
        drop(_tx);
    });
    let client = TcpStream::connect(addr).await.unwrap();
    client.set_nodelay(true).unwrap();
    client
}

/// Sends `input` (in pieces of `chunk` bytes) and reads until the server has sent `expected`
/// bytes or closed; returns what it sent.
async fn exchange(client: &mut TcpStream, input: &[u8], chunk: usize, until: &str) -> String {
    for piece in input.chunks(chunk.max(1)) {
        if client.write_all(piece).await.is_err() {
            break;
        }
        tokio::task::yield_now().await;
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(until) {
        match tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("no {until:?} within 5 s; got {:?}", String::from_utf8_lossy(&got)),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

async fn greeted(limits: Limits) -> TcpStream {
    let mut c = connect(limits).await;
    let greeting = exchange(&mut c, b"", 1, "OK \"Tern ManageSieve ready\"\r\n").await;
    assert!(greeting.starts_with("\"IMPLEMENTATION\" \"Tern\"\r\n"), "{greeting}");
    assert!(greeting.contains("\"SASL\" \"PLAIN\"\r\n\"SIEVE\" \"fileinto "), "{greeting}");
    assert!(greeting.contains("\"VERSION\" \"1.0\"\r\n"), "{greeting}");
    assert!(!greeting.contains("STARTTLS"), "no certificate, no STARTTLS: {greeting}");
    c
}

#[tokio::test]
async fn a_whole_session_cut_anywhere() {
    let input = format!(
        "AUTHENTICATE \"PLAIN\" {{{}+}}\r\n{PLAIN_ALICE}\r\n\
         PUTSCRIPT \"vacation\" {{14+}}\r\nkeep;\r\nstop;\r\n\r\n\
         PUTSCRIPT \"bad\" \"keep\"\r\n\
         SETACTIVE \"vacation\"\r\nLISTSCRIPTS\r\nGETSCRIPT \"vacation\"\r\n\
         DELETESCRIPT \"vacation\"\r\nRENAMESCRIPT \"vacation\" \"v2\"\r\nLISTSCRIPTS\r\n\
         DELETESCRIPT \"nope\"\r\nNOOP \"t1\"\r\nLOGOUT\r\n",
        PLAIN_ALICE.len()
    );
    let expected = "OK \"Logged in\"\r\n\
         OK \"Putscript completed\"\r\n\
         NO \"line 1: expected ';'\"\r\n\
         OK \"Setactive completed\"\r\n\
         \"vacation\" ACTIVE\r\nOK \"Listscripts completed\"\r\n\
         {14}\r\nkeep;\r\nstop;\r\n\r\nOK \"Getscript completed\"\r\n\
         NO (ACTIVE) \"the script is active\"\r\n\
         OK \"Renamescript completed\"\r\n\
         \"v2\" ACTIVE\r\nOK \"Listscripts completed\"\r\n\
         NO (NONEXISTENT) \"no such script\"\r\n\
         OK (TAG \"t1\") \"Done\"\r\n\
         OK \"Logout completed\"\r\n";
    for chunk in [input.len(), 1, 3, 7] {
        let mut c = greeted(Limits::default()).await;
        let got = exchange(&mut c, input.as_bytes(), chunk, "Logout completed").await;
        assert_eq!(got, expected, "in pieces of {chunk}");
    }
}

#[tokio::test]
async fn authenticate_with_a_challenge_and_cancel() {
    let mut c = greeted(Limits::default()).await;
    let got = exchange(&mut c, b"AUTHENTICATE \"PLAIN\"\r\n", 100, "\"\"\r\n").await;
    assert_eq!(got, "\"\"\r\n");
    let got = exchange(&mut c, b"\"*\"\r\n", 100, "\r\n").await;
    assert_eq!(got, "NO \"Authentication cancelled\"\r\n");
    let got = exchange(&mut c, b"AUTHENTICATE \"PLAIN\"\r\n", 100, "\"\"\r\n").await;
    assert_eq!(got, "\"\"\r\n");
    let answer = format!("{{{}+}}\r\n{PLAIN_ALICE}\r\n", PLAIN_ALICE.len());
    let got = exchange(&mut c, answer.as_bytes(), 2, "\r\n").await;
    assert_eq!(got, "OK \"Logged in\"\r\n");
    let got = exchange(&mut c, b"CAPABILITY\r\nUNAUTHENTICATE\r\nLISTSCRIPTS\r\n", 100, "first\"\r\n").await;
    assert!(got.contains("\"OWNER\" \"alice@example.com\"\r\n"), "{got}");
    assert!(got.ends_with("OK \"Capability completed\"\r\nOK \"Unauthenticated\"\r\nNO \"Authenticate first\"\r\n"));
}

#[tokio::test]
async fn failed_logins_and_an_unavailable_service() {
    let mut c = greeted(Limits::default()).await;
    let got = exchange(&mut c, b"AUTHENTICATE \"PLAIN\" \"AGFsaWNlQGV4YW1wbGUuY29tAHdyb25n\"\r\n", 100, "\r\n").await;
    assert_eq!(got, "NO \"Invalid credentials\"\r\n");
    // down@example.com / x
    let got = exchange(&mut c, b"AUTHENTICATE \"PLAIN\" \"AGRvd25AZXhhbXBsZS5jb20AeA==\"\r\n", 100, "\r\n").await;
    assert_eq!(got, "NO (TRYLATER) \"Mailbox service unavailable, try again later\"\r\n");
    let got = exchange(&mut c, b"AUTHENTICATE \"PLAIN\" \"bm90IHBsYWlu\"\r\n", 100, "\r\n").await;
    assert_eq!(got, "NO \"Malformed PLAIN response: PLAIN needs authzid NUL authcid NUL password\"\r\n");
    let got = exchange(&mut c, b"AUTHENTICATE \"CRAM-MD5\"\r\nPUTSCRIPT \"a\" \"keep;\"\r\n", 100, "first\"\r\n").await;
    assert_eq!(got, "NO \"Unsupported mechanism; use PLAIN\"\r\nNO \"Authenticate first\"\r\n");
    let wrong = b"AUTHENTICATE \"PLAIN\" \"AGFsaWNlQGV4YW1wbGUuY29tAHdyb25n\"\r\n";
    exchange(&mut c, wrong, 100, "\r\n").await;
    let got = exchange(&mut c, wrong, 100, "BYE").await;
    assert_eq!(got, "NO \"Invalid credentials\"\r\nBYE \"Too many failed logins, closing connection\"\r\n");
}

#[tokio::test]
async fn too_large_literals_are_skipped_or_end_the_session() {
    let limits = Limits { max_script_bytes: 20, max_discard: 1000, ..Limits::default() };
    let mut c = greeted(limits.clone()).await;
    let login = format!("AUTHENTICATE \"PLAIN\" \"{PLAIN_ALICE}\"\r\n");
    exchange(&mut c, login.as_bytes(), 100, "Logged in\"\r\n").await;
    // A script over the limit is read, thrown away and refused; the session goes on.
    let mut big = b"PUTSCRIPT \"big\" {30+}\r\n".to_vec();
    big.extend_from_slice(&[b'#'; 30]);
    big.extend_from_slice(b"\r\nHAVESPACE \"x\" 21\r\nHAVESPACE \"x\" 20\r\nNOOP\r\n");
    let got = exchange(&mut c, &big, 4, "Done\"\r\n").await;
    assert_eq!(
        got,
        "NO (QUOTA/MAXSIZE) \"Script too large: at most 20 octets\"\r\n\
         NO (QUOTA/MAXSIZE) \"Script too large: at most 20 octets\"\r\n\
         OK \"Putscript would succeed\"\r\nOK \"Done\"\r\n"
    );
    // Beyond what is worth reading: BYE at once.
    let got = exchange(&mut c, b"PUTSCRIPT \"huge\" {5000000000+}\r\n", 100, "BYE").await;
    assert_eq!(got, "BYE \"A literal of 5000000000 octets is too large, closing connection\"\r\n");
    // Before login, a literal larger than an answer needs ends the session too.
    let mut c = greeted(limits).await;
    let got = exchange(&mut c, b"AUTHENTICATE \"PLAIN\" {9000+}\r\n", 100, "BYE").await;
    assert_eq!(got, "BYE \"A literal of 9000 octets is too large, closing connection\"\r\n");
}

#[tokio::test]
async fn hostile_lines() {
    let limits = Limits { max_line: 100, max_errors: 4, ..Limits::default() };
    let mut c = greeted(limits.clone()).await;
    let mut long = b"NOOP \"".to_vec();
    long.extend_from_slice(&[b'a'; 300]);
    long.extend_from_slice(b"\"\r\nNOOP\r\nXYZZY\r\nGETSCRIPT\r\n");
    let got = exchange(&mut c, &long, 50, "Syntax").await;
    assert_eq!(
        got,
        "NO \"Line too long: at most 100 octets besides literals\"\r\nOK \"Done\"\r\n\
         NO \"Unknown command\"\r\nNO \"Syntax error: expected GETSCRIPT <name>\"\r\n"
    );
    let got = exchange(&mut c, b"\0\r\n", 1, "BYE").await;
    assert_eq!(got, "NO \"Syntax error: unexpected character\"\r\nBYE \"Too many errors, closing connection\"\r\n");
    let mut c = greeted(limits).await;
    let got = exchange(&mut c, b"PUTSCRIPT \"a\" {12x}\r\n", 100, "BYE").await;
    assert_eq!(got, "BYE \"Malformed literal (expected {N+} with N the literal's length), closing connection\"\r\n");
}
