use std::time::Duration;
use tern_imap::config::{Limits, ListenerKind};
use tern_tests::imap::{ImapTestServer, TRANSCRIPT_MAIL};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn scratch() {
    let script = std::fs::read_to_string(std::env::var("SCRIPT").unwrap()).unwrap();
    let limits = Limits { max_literal: 1000, ..Default::default() };
    let server = ImapTestServer::start(limits, std::env::var("NOPLAIN").is_err()).await;
    for b in TRANSCRIPT_MAIL { server.deliver("alice@example.com", b).await; }
    let mut io = server.connect_io(&server.frontend, if std::env::var("TLS").is_ok() { ListenerKind::Imaps } else { ListenerKind::Imap }).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    for part in script.split("\n--\n") {
        let data = format!("{}\r\n", part.replace('\n', "\r\n"));
        if !part.is_empty() { io.write_all(data.as_bytes()).await.unwrap(); io.flush().await.unwrap(); }
        loop {
            match tokio::time::timeout(Duration::from_millis(700), io.read(&mut buf)).await {
                Ok(Ok(0)) => { out.extend_from_slice(b"<<CLOSED>>\r\n"); break }
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        out.extend_from_slice(b"-----\r\n");
    }
    println!("{}", String::from_utf8_lossy(&out).replace("\r\n", "\n"));
}
