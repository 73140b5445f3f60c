//! The ManageSieve front-end end to end over real loopback sockets, against the real mailbox
//! service: the transcripts of `transcripts/managesieve/` with the client's bytes cut at many
//! boundaries; the mailbox service going away (TRYLATER); a graceful shutdown; and real clients,
//! Debian's sieve-connect and Python's sievelib, over STARTTLS.

use std::{process::Command, time::Duration};

use tern_managesieve::config::Limits;
use tern_tests::{
    common::{ScriptOutput, lenient_mailbox_limits, play_served_transcript_file, run_client, run_transcript_dir},
    managesieve::{ManageSieveTestServer, ManageSieveTranscript, plain_response},
    smtp::{Chunking, SmtpClient, run_steps},
};

const ALICE: &str = "alice@example.com";

/// Every file in `transcripts/managesieve/` is one scenario, played with the client's input cut
/// in several ways (whole, then in pieces of 1 to 7 bytes).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transcripts() {
    run_transcript_dir("managesieve", 14, play_served_transcript_file::<ManageSieveTranscript>).await;
}

/// The transcript runner notices a wrong ManageSieve response, so that a passing transcript
/// means something.
#[tokio::test]
async fn transcript_runner_detects_differences() {
    let good = "S: \"IMPLEMENTATION\" \"Tern\"\nS: \"SASL\" \"PLAIN\"\nS: \"SIEVE\" \"*\"\nS: \"STARTTLS\"\n\
                S: \"MAXREDIRECTS\" \"4\"\nS: \"UNAUTHENTICATE\"\nS: \"VERSION\" \"1.0\"\n\
                S: OK \"Tern ManageSieve ready\"\nC: GETSCRIPT \"x\"\nS: NO \"Authenticate first\"\n\
                C: LOGOUT\nS: OK \"Logout completed\"\nCLOSED\n";
    for (what, text, passes) in [
        ("good", good.to_string(), true),
        ("code", good.replace("NO \"Authenticate", "NO (NONEXISTENT) \"Authenticate"), false),
        ("close", good.replace("CLOSED\n", "S: OK\n"), false),
    ] {
        let t = ManageSieveTranscript::parse(what, &text).expect("a well-formed transcript");
        let server = ManageSieveTestServer::start_default(true).await;
        let mut client = SmtpClient::new(server.connect_io().await).with_timeout(Duration::from_millis(500));
        let result = run_steps(&mut client, &t.steps, Chunking::Whole).await;
        assert_eq!(result.is_ok(), passes, "{what}: {result:?}");
    }
}

/// Reads what the server sends up to and including a line that starts with `end`.
async fn until(client: &mut SmtpClient<tern_tests::smtp::BoxIo>, end: &str) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let line = client.read_line().await.unwrap_or_else(|e| panic!("waiting for {end:?}: {e}; got {lines:?}"));
        let done = line.starts_with(end);
        lines.push(line);
        if done {
            return lines;
        }
    }
}

/// With the mailbox service stopped, logins and script commands are answered NO (TRYLATER), and
/// the session goes on; once the service is back, the same session works again.
#[tokio::test]
async fn mailbox_down_is_try_later() {
    let mut server = ManageSieveTestServer::start_default(true).await;
    let mut c = SmtpClient::new(server.connect_io().await);
    until(&mut c, "OK").await;
    c.send(format!("AUTHENTICATE \"PLAIN\" \"{}\"\r\n", plain_response(ALICE)).as_bytes()).await.unwrap();
    assert_eq!(c.read_line().await.unwrap(), "OK \"Logged in\"");
    server.mailbox.stop().await;
    c.send(b"LISTSCRIPTS\r\nPUTSCRIPT \"a\" \"keep;\"\r\n").await.unwrap();
    for _ in 0..2 {
        let line = c.read_line().await.unwrap();
        assert_eq!(line, "NO (TRYLATER) \"Mailbox service unavailable, try again later\"");
    }
    let mut fresh = SmtpClient::new(server.connect_io().await);
    until(&mut fresh, "OK").await;
    fresh.send(format!("AUTHENTICATE \"PLAIN\" \"{}\"\r\n", plain_response(ALICE)).as_bytes()).await.unwrap();
    assert_eq!(fresh.read_line().await.unwrap(), "NO (TRYLATER) \"Mailbox service unavailable, try again later\"");
    // The test server comes back on the port it had, and the front-end's channel finds it.
    server.mailbox.restart().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        c.send(b"PUTSCRIPT \"a\" \"keep;\"\r\n").await.unwrap();
        let line = c.read_line().await.unwrap();
        if line == "OK \"Putscript completed\"" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the mailbox service did not come back: {line}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A graceful shutdown tells a session waiting for a command to come back later.
#[tokio::test]
async fn shutdown_says_bye() {
    let mut server = ManageSieveTestServer::start_default(true).await;
    let mut c = SmtpClient::new(server.connect_io().await);
    until(&mut c, "OK").await;
    server.stop_frontend().await;
    assert_eq!(c.read_line().await.unwrap(), "BYE (TRYLATER) \"Server shutting down, try again later\"");
}

/// STARTTLS discards what the client pipelined after it in plain text, and the capabilities
/// come again under TLS (with SASL PLAIN now, without STARTTLS).
#[tokio::test]
async fn starttls_sends_capabilities_again() {
    let server = ManageSieveTestServer::start(Limits::default(), false, lenient_mailbox_limits()).await;
    let mut c = SmtpClient::new(server.connect_io().await);
    let greeting = until(&mut c, "OK").await;
    assert!(greeting.contains(&"\"SASL\" \"\"".to_string()) && greeting.contains(&"\"STARTTLS\"".to_string()));
    c.send(b"STARTTLS\r\nLOGOUT\r\n").await.unwrap();
    assert_eq!(c.read_line().await.unwrap(), "OK \"Begin TLS negotiation now\"");
    let (tcp, pending) = c.into_parts();
    assert!(pending.is_empty());
    let tls = tern_tests::common::tls_handshake(&server.ca_cert, tcp).await.expect("TLS handshake");
    let mut c = SmtpClient::new(Box::new(tls) as tern_tests::smtp::BoxIo);
    let capabilities = until(&mut c, "OK").await;
    assert_eq!(capabilities.last().unwrap(), "OK \"TLS negotiation successful\"");
    assert!(capabilities.contains(&"\"SASL\" \"PLAIN\"".to_string()), "{capabilities:?}");
    assert!(!capabilities.iter().any(|l| l.contains("STARTTLS")), "{capabilities:?}");
    c.send(format!("AUTHENTICATE \"PLAIN\" \"{}\"\r\nLOGOUT\r\n", plain_response(ALICE)).as_bytes()).await.unwrap();
    assert_eq!(c.read_line().await.unwrap(), "OK \"Logged in\"");
    assert_eq!(c.read_line().await.unwrap(), "OK \"Logout completed\"");
}

const SCRIPT: &str = "require [\"fileinto\", \"imap4flags\"];\r\n\
                      if header :contains \"List-Id\" \"tern.example\" {\r\n\
                      \x20   addflag \"\\\\Seen\";\r\n\
                      \x20   fileinto \"Lists/Tern\";\r\n\
                      }\r\n";

/// One run of sieve-connect against the server: STARTTLS with the certificate as the only trust
/// anchor, PLAIN with the password on a file descriptor, and `action`.
async fn sieve_connect(server: &ManageSieveTestServer, dir: &std::path::Path, action: &[&str]) -> (bool, String) {
    let password = dir.join("password");
    std::fs::write(&password, "alice-pw\n").unwrap();
    // sieve-connect reads the password from a file descriptor: the shell opens the file as 3.
    let mut args = vec![
        "--server".to_string(),
        "127.0.0.1".into(),
        "--port".into(),
        server.addr.port().to_string(),
        "--user".into(),
        ALICE.into(),
        "--passwordfd".into(),
        "3".into(),
        "--tlscafile".into(),
        server.ca_cert.display().to_string(),
    ];
    args.extend(action.iter().map(|a| a.to_string()));
    let quoted: Vec<String> = args.iter().map(|a| format!("'{}'", a.replace('\'', "'\\''"))).collect();
    let mut command = Command::new("sh");
    command.arg("-c").arg(format!("exec sieve-connect {} 3<'{}'", quoted.join(" "), password.display()));
    let out =
        run_client(command, "install sieve-connect (apt-get install sieve-connect)", Duration::from_secs(30)).await;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Debian's sieve-connect uploads, activates, lists and downloads a script over STARTTLS, and
/// hears the refusals of a bad script and of deleting the active one.
#[tokio::test]
#[ignore = "needs sieve-connect; run by cargo xtask ci"]
async fn sieve_connect_client() {
    let server = ManageSieveTestServer::start_default(false).await;
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("lists.sieve");
    std::fs::write(&local, SCRIPT).unwrap();
    let local = local.display().to_string();
    let (ok, out) =
        sieve_connect(&server, dir.path(), &["--upload", "--localsieve", &local, "--remotesieve", "lists"]).await;
    assert!(ok, "upload: {out}");
    let (ok, out) = sieve_connect(&server, dir.path(), &["--activate", "--remotesieve", "lists"]).await;
    assert!(ok, "activate: {out}");
    let (ok, out) = sieve_connect(&server, dir.path(), &["--list"]).await;
    assert!(ok, "list: {out}");
    assert!(out.lines().any(|l| l.trim() == "\"lists\" ACTIVE"), "list: {out}");
    let back = dir.path().join("back.sieve");
    let back_arg = back.display().to_string();
    let (ok, out) =
        sieve_connect(&server, dir.path(), &["--download", "--remotesieve", "lists", "--localsieve", &back_arg]).await;
    assert!(ok, "download: {out}");
    assert_eq!(std::fs::read_to_string(&back).unwrap(), SCRIPT);
    let bad = dir.path().join("bad.sieve");
    std::fs::write(&bad, "require \"fileinto\";\nif true { keep }\n").unwrap();
    let bad = bad.display().to_string();
    let (ok, out) =
        sieve_connect(&server, dir.path(), &["--upload", "--localsieve", &bad, "--remotesieve", "bad"]).await;
    assert!(!ok && out.contains("NO \"line 2, column 16: "), "bad upload: {out}");
    let (ok, out) = sieve_connect(&server, dir.path(), &["--delete", "--remotesieve", "lists"]).await;
    assert!(!ok && out.contains("NO (ACTIVE)"), "delete of the active script: {out}");
    // What sieve-connect stored is what the mailbox service keeps.
    let mut mail = server.mailbox.mailbox_client().await;
    let id = server.account_id(ALICE);
    let stored = mail
        .get_sieve_script(tern_tests::tern_proto::v1::GetSieveScriptRequest { account_id: id, name: "lists".into() })
        .await
        .expect("the stored script")
        .into_inner();
    assert!(stored.active);
    assert_eq!(stored.text, SCRIPT);
}

/// Python's sievelib (installed into `.tools/py` by cargo xtask) does the same over STARTTLS.
#[tokio::test]
#[ignore = "needs sievelib in .tools/py; run by cargo xtask ci"]
async fn sievelib_client() {
    let server = ManageSieveTestServer::start_default(false).await;
    let py = tern_tests::servers::workspace_root().expect("the workspace root").join(".tools").join("py");
    assert!(py.join("sievelib").is_dir(), "sievelib is not installed in {}: run cargo xtask ci", py.display());
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts").join("sievelib_client.py");
    let mut command = Command::new("python3");
    command.arg(script).arg(server.addr.port().to_string()).arg(&server.ca_cert).env("PYTHONPATH", &py);
    let run = run_client(command, "install Python 3 (apt-get install python3)", Duration::from_secs(60)).await;
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "sievelib failed ({}):\n{stdout}\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    let out = ScriptOutput::parse(&stdout);
    assert_eq!(out.text("implementation"), "Tern");
    assert!(out.text("sieve").split(' ').any(|e| e == "vacation"), "{}", out.text("sieve"));
    assert!(out.text("check_error").starts_with("line 1, column 16: "), "{}", out.text("check_error"));
    assert_eq!(out.text("active"), "main");
    assert_eq!(out.text("others"), "other");
    assert!(out.text("script").contains("vacation :days 3 \"Back on Monday. Grüße\";"), "{}", out.text("script"));
    assert_eq!(out.text("delete_code"), "ACTIVE");
    assert_eq!(out.text("active_after"), "main");
    assert_eq!(out.text("others_after"), "");
}
