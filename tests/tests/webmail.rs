//! Roundcube webmail (Debian's `roundcube-core`, served by PHP's built-in web server) driven by
//! a headless Chromium through chromedriver, against Tern's IMAP and submission servers: log in,
//! the message list, sorting by date (IMAP SORT), the threads view (IMAP THREAD), a quick search,
//! moving a message to Trash and sending a message, each checked against what Tern itself then
//! holds, over IMAP.
//!
//! The browser is driven with the W3C WebDriver protocol, spoken by the small blocking client
//! below over HTTP/1.1 and JSON, so that the test needs no WebDriver crate and no Python
//! packages.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use base64::Engine;
use serde_json::{Value, json};
use tern_imap::config::Limits;
use tern_tests::{
    common::{Background, DevCert, bind_loopback, mailbox_channel},
    imap::{ImapTestServer, literals, password_of},
    servers::{Process, free_ports},
};

const ALICE: &str = "alice@example.com";

/// Where Debian's packages put what the test runs.
const ROUNDCUBE_ROOT: &str = "/var/lib/roundcube/public_html";
const ROUNDCUBE_DEFAULTS: &str = "/etc/roundcube/defaults.inc.php";
const ROUNDCUBE_SCHEMA: &str = "/usr/share/roundcube/SQL/sqlite.initial.sql";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// What to install when one of them is missing; `cargo xtask ci` installs them.
const INSTALL_HINT: &str = "apt-get install --no-install-recommends roundcube-core roundcube-sqlite3 php-cli \
                            php-sqlite3 chromium chromium-driver (cargo xtask ci does)";

/// How long one step in the browser (a page load, a list refresh, a send) may take.
const STEP_WAIT: Duration = Duration::from_secs(30);

/// How long one WebDriver command may take; a new session starts a browser.
const COMMAND_WAIT: Duration = Duration::from_secs(60);

/// The element reference key of the W3C WebDriver protocol.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The seeded messages: subject, date, and the Message-ID they reply to. Delivered in this
/// order, which is neither their date order nor its reverse, so that a list sorted by date shows
/// that the server sorted it.
const SEEDED: [(&str, &str, Option<&str>); 4] = [
    ("Quarterly budget", "Fri, 20 Nov 2026 09:00:00 +0000", None),
    ("Garden party", "Wed, 25 Nov 2026 18:30:00 +0000", None),
    ("Lunch plans", "Tue, 10 Nov 2026 11:00:00 +0000", None),
    ("Re: Lunch plans", "Thu, 12 Nov 2026 12:15:00 +0000", Some("lunch-plans")),
];

/// The seeded subjects newest first, as a list sorted by date, descending, shows them.
const BY_DATE_DESC: [&str; 4] = ["Garden party", "Quarterly budget", "Re: Lunch plans", "Lunch plans"];

/// One seeded message: a reply carries In-Reply-To and References, as a mail client writes them.
fn seeded_message(subject: &str, date: &str, reply_to: Option<&str>) -> Vec<u8> {
    let id = subject.to_lowercase().replace("re: ", "re-").replace(' ', "-");
    let threading = reply_to
        .map(|parent| format!("In-Reply-To: <{parent}@remote.example>\r\nReferences: <{parent}@remote.example>\r\n"));
    format!(
        "From: Bob Sender <bob@remote.example>\r\nTo: Alice <{ALICE}>\r\nSubject: {subject}\r\nDate: {date}\r\n\
         Message-ID: <{id}@remote.example>\r\n{}MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         About {subject}.\r\n",
        threading.unwrap_or_default()
    )
    .into_bytes()
}

/// A minimal blocking W3C WebDriver client for one browser session of chromedriver.
struct Browser {
    driver: SocketAddr,
    session: String,
    /// Where a screenshot goes when a step fails.
    screenshot: PathBuf,
    /// Roundcube's log directory, whose IMAP and error logs a failure quotes.
    logs: PathBuf,
}

impl Browser {
    /// Starts a headless Chromium through the chromedriver at `driver`, with its profile in
    /// `profile`. Chromium as root needs `--no-sandbox`, and the flags that stop it from reaching
    /// out to Google's services keep it from hanging on network lookups that cannot succeed.
    fn start(driver: SocketAddr, profile: &Path, screenshot: PathBuf, logs: PathBuf) -> Browser {
        let args = [
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-extensions".into(),
            "--window-size=1400,1000".into(),
            format!("--user-data-dir={}", profile.display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let value = webdriver(driver, "POST", "/session", Some(&capabilities))
            .unwrap_or_else(|e| panic!("chromedriver cannot start Chromium: {e}"));
        let session = value["sessionId"].as_str().unwrap_or_else(|| panic!("no sessionId in {value}")).to_string();
        Browser { driver, session, screenshot, logs }
    }

    /// Runs one command of the session, failing the test (with a screenshot) on an error.
    fn command(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        webdriver(self.driver, method, &path, body)
            .unwrap_or_else(|e| self.fail(&format!("WebDriver {method} {path} failed: {e}")))
    }

    fn goto(&self, url: &str) {
        self.command("POST", "/url", Some(&json!({ "url": url })));
    }

    /// The first displayed element of those that `css` selects, waiting for one to be there.
    /// Roundcube's responsive skin has hidden copies of some toolbars, so the first match need
    /// not be the one a user sees.
    fn element(&self, css: &str) -> String {
        let deadline = Instant::now() + STEP_WAIT;
        let path = format!("/session/{}/element", self.session);
        loop {
            let body = json!({"using": "css selector", "value": css});
            if let Ok(Value::Array(found)) = webdriver(self.driver, "POST", &format!("{path}s"), Some(&body)) {
                for element in found {
                    let id = element[ELEMENT].as_str().expect("an element reference").to_string();
                    let shown = webdriver(self.driver, "GET", &format!("{path}/{id}/displayed"), None);
                    if shown.is_ok_and(|v| v == Value::Bool(true)) {
                        return id;
                    }
                }
            }
            if Instant::now() > deadline {
                self.fail(&format!("no displayed element {css} within {STEP_WAIT:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Clicks the element that `css` selects, as a user would.
    fn click(&self, css: &str) {
        let id = self.element(css);
        self.command("POST", &format!("/element/{id}/click"), Some(&json!({})));
    }

    /// Types `text` into the element that `css` selects (`\u{e007}` is the Enter key).
    fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.command("POST", &format!("/element/{id}/value"), Some(&json!({ "text": text })));
    }

    /// Runs `script` until `done` accepts what it returns, and returns that; fails the test
    /// after [`STEP_WAIT`], with what the script returned last. The script runs only while
    /// Roundcube has no request in flight, so a list is never read half refreshed.
    fn wait_for(&self, what: &str, script: &str, done: impl Fn(&Value) -> bool) -> Value {
        let guarded =
            format!("if (!window.rcmail || rcmail.busy || document.readyState != 'complete') return null;\n{script}");
        let deadline = Instant::now() + STEP_WAIT;
        let mut last = Value::Null;
        loop {
            // A script can fail while a page is being replaced; that counts as not done yet.
            let path = format!("/session/{}/execute/sync", self.session);
            let body = json!({"script": guarded, "args": []});
            if let Ok(value) = webdriver(self.driver, "POST", &path, Some(&body)) {
                if !value.is_null() && done(&value) {
                    return value;
                }
                last = value;
            }
            if Instant::now() > deadline {
                self.fail(&format!("{what}: not seen within {STEP_WAIT:?}; the page's script returned last: {last}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Fails the test with `why`, the page's text, a screenshot, and the ends of Roundcube's
    /// logs.
    fn fail(&self, why: &str) -> ! {
        let path = format!("/session/{}", self.session);
        let text = webdriver(
            self.driver,
            "POST",
            &format!("{path}/execute/sync"),
            Some(&json!({
                "script": "return location.href + '\\n' + (document.body ? document.body.innerText : '')",
                "args": [],
            })),
        )
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .unwrap_or_else(|e| format!("(cannot read the page: {e})"));
        let shot = match webdriver(self.driver, "GET", &format!("{path}/screenshot"), None) {
            Ok(Value::String(png)) => match base64::engine::general_purpose::STANDARD.decode(png) {
                Ok(bytes) => match std::fs::write(&self.screenshot, bytes) {
                    Ok(()) => format!("screenshot in {}", self.screenshot.display()),
                    Err(e) => format!("cannot write the screenshot: {e}"),
                },
                Err(e) => format!("the screenshot is not base64: {e}"),
            },
            other => format!("no screenshot: {other:?}"),
        };
        panic!(
            "{why}\n--- the page shows\n{}\n--- {shot}\n--- Roundcube's errors\n{}\n--- Roundcube's IMAP log (end)\n{}",
            truncate(&text, 4000),
            tail(&self.logs.join("errors.log"), 4000),
            tail(&self.logs.join("imap.log"), 6000),
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closes Chromium; chromedriver itself is killed with its process handle.
        let _ = webdriver(self.driver, "DELETE", &format!("/session/{}", self.session), None);
    }
}

/// One WebDriver request: its JSON `value`, or the WebDriver error it answered with.
/// chromedriver keeps the connection open whatever the request says, so the answer is read up
/// to its `Content-Length` rather than to the end of the stream.
fn webdriver(driver: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut stream = TcpStream::connect_timeout(&driver, COMMAND_WAIT).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(COMMAND_WAIT)).map_err(|e| e.to_string())?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {driver}\r\nConnection: close\r\n");
    if method != "GET" && method != "DELETE" {
        request.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).map_err(|e| format!("{method} {path}: {e}"))?;
    let mut length = None;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).map_err(|e| format!("{method} {path}: {e}"))?;
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse::<usize>().ok();
        }
    }
    let length = length.ok_or_else(|| format!("{method} {path}: no Content-Length in the answer ({status})"))?;
    let mut content = vec![0; length];
    reader.read_exact(&mut content).map_err(|e| format!("{method} {path}: {e}"))?;
    let json: Value = serde_json::from_slice(&content)
        .map_err(|e| format!("not JSON ({e}): {}", String::from_utf8_lossy(&content)))?;
    let value = json.get("value").cloned().unwrap_or(Value::Null);
    if !status.starts_with("HTTP/1.1 200") {
        return Err(format!("{}: {}", value["error"], value["message"]));
    }
    Ok(value)
}

/// The last `max` bytes of the file at `path`, or why there are none.
fn tail(path: &Path, max: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(max)..]).into_owned(),
        Err(e) => format!("({}: {e})", path.display()),
    }
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// A submission listener (port 587 semantics) in front of `server`'s mailbox service, with AUTH
/// allowed before TLS, as Roundcube is configured to use it on loopback. Stops when dropped.
async fn start_submission(server: &ImapTestServer, cert: &DevCert) -> (SocketAddr, Background) {
    use tern_smtp::{
        backend::GrpcBackend,
        config::{ListenerKind, SmtpConfig},
        server::Listener,
    };
    let cfg = Arc::new(SmtpConfig {
        hostname: "smtp.test".into(),
        limits: tern_smtp::config::Limits::default(),
        tls: Some(cert.server_config.clone()),
        allow_plaintext_auth: true,
        verifier: None,
        spam: None,
        dnsbl: None,
    });
    let (socket, addr) = bind_loopback().await;
    let listeners = vec![Listener { kind: ListenerKind::Submission, socket, proxy_protocol: false }];
    let backend = Arc::new(GrpcBackend::new(mailbox_channel(server.mailbox.addr)));
    let grace = Duration::from_secs(2);
    let smtp = Background::spawn(grace * 3, move |rx| tern_smtp::server::serve(cfg, backend, listeners, rx, grace));
    (addr, smtp)
}

/// The subjects of the messages in `folder` of Alice, in UID order, as an IMAP session of her
/// own sees them.
async fn subjects(server: &ImapTestServer, folder: &str) -> Vec<String> {
    let mut imap = server.login(ALICE).await;
    let select = imap.ok(&format!("EXAMINE {folder}")).await;
    let exists =
        select.starting_with("").iter().find_map(|l| l.strip_suffix(" EXISTS")?.strip_prefix("* ")?.parse().ok());
    let mut out = Vec::new();
    if exists.unwrap_or(0u32) > 0 {
        let fetch = imap.ok("FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])").await;
        for response in &fetch.untagged {
            for literal in literals(&response.0) {
                let header = String::from_utf8_lossy(literal);
                let subject = header.trim().strip_prefix("Subject:").unwrap_or(header.trim()).trim().to_string();
                out.push(subject);
            }
        }
    }
    imap.logout().await;
    out
}

/// Waits until `folder` of Alice holds exactly `want` (in any order), over IMAP.
async fn wait_for_folder(server: &ImapTestServer, folder: &str, want: &[&str], browser: &Browser) -> Vec<String> {
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    let deadline = Instant::now() + STEP_WAIT;
    loop {
        let mut got = subjects(server, folder).await;
        got.sort();
        if got == want {
            return got;
        }
        if Instant::now() > deadline {
            browser.fail(&format!("{folder} over IMAP holds {got:?}, not {want:?}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The rows of Roundcube's message list, in the order shown: subject, UID, the UID of the
/// thread parent (0 for none), the depth in the thread and the row's element id.
const LIST_ROWS: &str = "return Array.from(rcmail.message_list.tbody.rows)
    .filter(r => r.uid && r.style.display != 'none')
    .map(r => {
        const row = rcmail.message_list.rows[r.uid] || {};
        const link = r.querySelector('span.subject a') || r.querySelector('td.subject');
        return [link ? link.textContent.trim() : '', String(r.uid), String(row.parent_uid || 0), row.depth || 0, r.id];
    });";

/// The subjects of the rows of [`LIST_ROWS`].
fn row_subjects(rows: &Value) -> Vec<String> {
    rows.as_array()
        .map(|rows| rows.iter().map(|r| r[0].as_str().unwrap_or_default().to_string()).collect())
        .unwrap_or_default()
}

/// Roundcube's IMAP commands so far, from its `imap_debug` log: the lines the client sent.
fn imap_commands(logs: &Path) -> Vec<String> {
    std::fs::read_to_string(logs.join("imap.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once("] C: ").map(|(_, command)| command.to_string()))
        .collect()
}

/// Roundcube from Debian's packages in a headless Chromium against Tern (issue #14): it logs in
/// over IMAP (plain-text LOGIN on loopback), lists INBOX, sorts it by date with IMAP SORT (the
/// order shown is the seeded messages' date order, not their arrival order), shows a reply
/// under its original in the threads view (IMAP THREAD), finds a message by a word of its
/// subject, moves it to Trash (gone from INBOX and in Trash over IMAP) and sends a message to
/// Alice herself through submission with AUTH (in INBOX, and its copy in Sent, over IMAP).
#[test]
#[ignore = "needs Roundcube, PHP and Chromium (Debian packages); run by cargo xtask ci"]
fn roundcube_in_headless_chromium() {
    for path in [ROUNDCUBE_ROOT, ROUNDCUBE_DEFAULTS, ROUNDCUBE_SCHEMA, CHROMIUM, CHROMEDRIVER] {
        assert!(Path::new(path).exists(), "{path} is missing: {INSTALL_HINT}");
    }
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // Plain-text logins allowed: Roundcube talks to IMAP on loopback without TLS, as a
    // webmail beside its IMAP server usually does.
    let server = runtime.block_on(ImapTestServer::start(Limits::default(), true));
    let cert = DevCert::new("tern-webmail-test-");
    let (submission, _smtp) = runtime.block_on(start_submission(&server, &cert));
    for (subject, date, reply_to) in SEEDED {
        runtime.block_on(server.deliver(ALICE, &seeded_message(subject, date, reply_to)));
    }

    // Roundcube's configuration, database, logs and temporary files, all in a directory of the
    // test's own; `ROUNDCUBE_CONFIG_DIR` points Debian's Roundcube at it instead of
    // /etc/roundcube, so the defaults file is linked in beside the configuration.
    let dir = tempfile::Builder::new().prefix("tern-roundcube-").tempdir().unwrap();
    let (config, logs, temp) = (dir.path().join("config"), dir.path().join("logs"), dir.path().join("temp"));
    for d in [&config, &logs, &temp] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::os::unix::fs::symlink(ROUNDCUBE_DEFAULTS, config.join("defaults.inc.php")).unwrap();
    let database = dir.path().join("roundcube.db");
    std::fs::write(
        config.join("config.inc.php"),
        format!(
            "<?php\n$config = [];\n\
             $config['db_dsnw'] = 'sqlite:///{database}?mode=0600';\n\
             $config['imap_host'] = '127.0.0.1:{imap}';\n\
             $config['smtp_host'] = '127.0.0.1:{smtp}';\n\
             $config['smtp_user'] = '%u';\n$config['smtp_pass'] = '%p';\n\
             $config['des_key'] = 'tern-webmail-test-key-24';\n\
             $config['plugins'] = [];\n$config['skin'] = 'elastic';\n\
             $config['log_driver'] = 'file';\n$config['log_dir'] = '{logs}/';\n$config['temp_dir'] = '{temp}/';\n\
             $config['imap_debug'] = true;\n$config['smtp_debug'] = true;\n\
             $config['enable_spellcheck'] = false;\n\
             $config['autoexpand_threads'] = 1;\n\
             $config['refresh_interval'] = 0;\n\
             $config['drafts_mbox'] = 'Drafts';\n$config['sent_mbox'] = 'Sent';\n\
             $config['trash_mbox'] = 'Trash';\n$config['junk_mbox'] = 'Junk';\n",
            database = database.display(),
            imap = server.frontend.imap.port(),
            smtp = submission.port(),
            logs = logs.display(),
            temp = temp.display(),
        ),
    )
    .unwrap();
    let init = Command::new("php")
        .arg("-r")
        .arg(format!(
            "$db = new PDO('sqlite:{}'); $db->setAttribute(PDO::ATTR_ERRMODE, PDO::ERRMODE_EXCEPTION); \
             $db->exec(file_get_contents('{ROUNDCUBE_SCHEMA}'));",
            database.display()
        ))
        .output()
        .unwrap_or_else(|e| panic!("cannot run php ({e}): {INSTALL_HINT}"));
    assert!(init.status.success(), "Roundcube's database schema: {}", String::from_utf8_lossy(&init.stderr));

    // PHP's built-in web server, one process: with PHP_CLI_SERVER_WORKERS its workers would
    // outlive the killed parent. Roundcube's concurrent requests merely wait their turn.
    let [web_port, driver_port] = free_ports().unwrap();
    let web: SocketAddr = ([127, 0, 0, 1], web_port).into();
    let mut php = Process::new("php", dir.path());
    php.env("ROUNDCUBE_CONFIG_DIR", &config);
    php.spawn(&["-S".to_string(), web.to_string(), "-t".into(), ROUNDCUBE_ROOT.into()]).unwrap();
    php.wait_ready("Roundcube's login page is served", || {
        tern_tests::servers::http_request(web, "GET", "/", &[], b"")
            .is_ok_and(|r| r.status == 200 && String::from_utf8_lossy(&r.body).contains("rcmloginuser"))
    })
    .unwrap_or_else(|e| panic!("Roundcube does not start: {e:#}\n{}", tail(&logs.join("errors.log"), 4000)));

    let driver: SocketAddr = ([127, 0, 0, 1], driver_port).into();
    let mut chromedriver = Process::new(CHROMEDRIVER, dir.path());
    chromedriver.spawn(&[format!("--port={driver_port}")]).unwrap();
    chromedriver
        .wait_ready("chromedriver is ready", || {
            webdriver(driver, "GET", "/status", None).is_ok_and(|v| v["ready"] == true)
        })
        .unwrap();
    // The screenshot of a failure goes outside the temporary directory, which is removed when
    // the test fails.
    let screenshot = std::env::temp_dir().join(format!("tern-roundcube-failure-{}.png", std::process::id()));
    let browser = Browser::start(driver, &dir.path().join("chromium"), screenshot, logs.clone());
    eprintln!(
        "webmail: Roundcube at http://{web}/, files in {} ({:?} to start)",
        dir.path().display(),
        started.elapsed()
    );
    let base = format!("http://{web}/");

    // 1. Log in: the message list shows the four seeded messages.
    browser.goto(&base);
    browser.type_into("#rcmloginuser", ALICE);
    browser.type_into("#rcmloginpwd", password_of(ALICE));
    browser.click("#rcmloginsubmit");
    let rows = browser.wait_for("the message list after login", LIST_ROWS, |rows| row_subjects(rows).len() == 4);
    let mut listed = row_subjects(&rows);
    listed.sort();
    let mut seeded: Vec<String> = SEEDED.iter().map(|(s, _, _)| s.to_string()).collect();
    seeded.sort();
    assert_eq!(listed, seeded, "the message list after login");
    assert!(
        imap_commands(&logs).iter().any(|c| c.contains("LOGIN") || c.contains("AUTHENTICATE")),
        "Roundcube did not log in over IMAP:\n{}",
        tail(&logs.join("imap.log"), 4000)
    );

    // 2. Sort by date, newest first, in the list options dialog.
    browser.click("#listmenulink");
    browser.click("#listoptions-sortcol-clone option[value='date']");
    browser.click("#listoptions-sortord-clone option[value='DESC']");
    browser.click(".ui-dialog-buttonpane button.mainaction");
    let rows = browser.wait_for(
        "the list sorted by date",
        &format!("if (rcmail.env.sort_col != 'date') return null;\n{LIST_ROWS}"),
        |rows| row_subjects(rows) == BY_DATE_DESC,
    );
    assert_eq!(row_subjects(&rows), BY_DATE_DESC);
    let sorts: Vec<String> = imap_commands(&logs).into_iter().filter(|c| c.contains(" SORT (")).collect();
    assert!(sorts.iter().any(|c| c.contains("DATE")), "no IMAP SORT by date: {sorts:?}");

    // 3. The threads view: the reply under its original, the other two messages threads of
    // their own.
    browser.click("#listmenulink");
    browser.click("#listoptions-threads-clone option[value='threads']");
    browser.click(".ui-dialog-buttonpane button.mainaction");
    let rows = browser.wait_for(
        "the threads view",
        &format!("if (!rcmail.env.threading) return null;\n{LIST_ROWS}"),
        |rows| row_subjects(rows).len() == 4 && rows.as_array().unwrap().iter().any(|r| r[3].as_u64() == Some(1)),
    );
    let rows = rows.as_array().unwrap();
    let find = |subject: &str| {
        rows.iter().find(|r| r[0] == subject).unwrap_or_else(|| panic!("{subject} not in the threads view: {rows:?}"))
    };
    let (original, reply) = (find("Lunch plans"), find("Re: Lunch plans"));
    assert_eq!(reply[2], original[1], "the reply is not under its original: {rows:?}");
    assert_eq!(reply[3], 1, "{rows:?}");
    for subject in ["Lunch plans", "Garden party", "Quarterly budget"] {
        assert_eq!(find(subject)[3], 0, "{subject} is not a thread of its own: {rows:?}");
    }
    let threads: Vec<String> = imap_commands(&logs).into_iter().filter(|c| c.contains(" THREAD ")).collect();
    assert!(!threads.is_empty(), "no IMAP THREAD:\n{}", tail(&logs.join("imap.log"), 4000));

    // 4. Quick search for a word of a subject.
    browser.type_into("#mailsearchform", "budget\u{e007}");
    let rows = browser.wait_for(
        "the search result",
        &format!("if (!rcmail.env.search_request) return null;\n{LIST_ROWS}"),
        |rows| row_subjects(rows).len() == 1,
    );
    assert_eq!(row_subjects(&rows), ["Quarterly budget"]);
    // In the threads view Roundcube searches with the search keys in UID THREAD (UID SORT in a
    // sorted list, UID SEARCH in an unsorted one).
    let searches: Vec<String> =
        imap_commands(&logs).into_iter().filter(|c| c.contains("HEADER SUBJECT budget")).collect();
    assert!(!searches.is_empty(), "the search did not reach IMAP:\n{}", tail(&logs.join("imap.log"), 4000));

    // 5. Select the message found and delete it: Roundcube moves it to Trash.
    let (uid, row) = (rows[0][1].as_str().unwrap().to_string(), rows[0][4].as_str().unwrap().to_string());
    browser.click(&format!("#messagelist tr#{row} td.subject"));
    // Roundcube ignores commands while a request of its own is in flight, so Delete is clicked
    // only once the preview has been shown and has marked the message read.
    browser.wait_for(
        "the message selected, shown and marked read",
        &format!(
            "const row = rcmail.message_list.rows['{uid}'];\n\
             return row && !row.unread && rcmail.message_list.get_single_selection() == '{uid}' \
             && rcmail.commands['delete'] ? true : null;"
        ),
        |v| v == true,
    );
    browser.click("#toolbar-menu a.delete");
    browser.wait_for("the message gone from the list", LIST_ROWS, |rows| row_subjects(rows).is_empty());
    let inbox: Vec<&str> = BY_DATE_DESC.iter().copied().filter(|s| *s != "Quarterly budget").collect();
    runtime.block_on(wait_for_folder(&server, "INBOX", &inbox, &browser));
    runtime.block_on(wait_for_folder(&server, "Trash", &["Quarterly budget"], &browser));

    // 6. Compose and send a message to Alice herself.
    browser.goto(&format!("{base}?_task=mail&_action=compose"));
    browser.type_into("#compose_to .recipient-input input", &format!("{ALICE},"));
    browser.type_into("#compose-subject", "Sent from Roundcube");
    browser.type_into("#composebody", "Hello from a headless browser.");
    browser.wait_for("the recipient taken", "return document.getElementById('_to').value;", |v| {
        v.as_str().is_some_and(|to| to.contains(ALICE))
    });
    browser.click("button.send");
    browser.wait_for(
        "the message list after sending",
        "return rcmail.env.action == '' && rcmail.env.task == 'mail' ? location.href : null;",
        |_| true,
    );
    let mut inbox = inbox;
    inbox.push("Sent from Roundcube");
    runtime.block_on(wait_for_folder(&server, "INBOX", &inbox, &browser));
    runtime.block_on(wait_for_folder(&server, "Sent", &["Sent from Roundcube"], &browser));
    let smtp_log = tail(&logs.join("smtp.log"), 100_000);
    assert!(smtp_log.contains("AUTH"), "Roundcube did not authenticate to submission:\n{smtp_log}");

    // Dropped in reverse order: the browser closes, then chromedriver and PHP are killed, then
    // the directory goes.
    eprintln!("webmail: Roundcube passed every step in {:?}", started.elapsed());
}
