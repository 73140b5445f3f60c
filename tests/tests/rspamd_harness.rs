//! The spam filtering harness itself (issue #17): the rspamd of `tern_tests::rspamd` gives each
//! verdict a test can ask for, and learns per user into its Redis; the DNS blocklist of
//! `tern_tests::dnsbl` answers a real resolver (hickory, the one mail-auth uses) and counts what
//! reaches it. The rspamd requests are hand-written HTTP/1.1 over a plain TcpStream, as a client
//! of rspamd's protocol would send them.

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    time::Duration,
};

use mail_auth::hickory_resolver::{
    TokioResolver,
    config::{NameServerConfig, ResolverConfig, ResolverOpts},
    net::runtime::TokioRuntimeProvider,
    proto::rr::RData,
};
use serde_json::Value;
use tern_tests::{
    dnsbl::DnsBl,
    rspamd::{
        ACTION_HEADER, GTUBE, GTUBE_ADD_HEADER, GTUBE_REWRITE_SUBJECT, Rspamd, SCORE_HEADER, SUBJECT_PREFIX, ham_text,
        message, spam_text,
    },
};

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";

/// POSTs `body` to `path` at `addr` with `headers` over a new connection, by hand, and returns
/// the status and the body (rspamd closes the connection after its answer).
fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).expect("connect to rspamd");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut request = format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read rspamd's answer");
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete header");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("status in {head}"));
    (status, response[split + 4..].to_vec())
}

/// Scans `message` through a hand-written request from 127.0.0.1, and returns the JSON.
fn check(rspamd: &Rspamd, message: &[u8], headers: &[(&str, &str)]) -> Value {
    let mut all = vec![("IP", "127.0.0.1"), ("From", "sender@remote.example"), ("Rcpt", ALICE)];
    all.extend_from_slice(headers);
    let (status, body) = post(rspamd.normal_addr, "/checkv2", &all, message);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).expect("JSON from /checkv2")
}

#[tokio::test]
#[ignore = "needs rspamd and redis-server (Debian packages); run by cargo xtask ci"]
async fn rspamd_gives_each_verdict_a_test_asks_for() {
    let rspamd = Rspamd::start().await;
    let ham = check(&rspamd, &message("Lunch", &[], &ham_text(1)), &[]);
    assert_eq!(ham["action"], "no action", "{ham}");
    assert!(ham["score"].as_f64().unwrap() < 1.0, "{ham}");
    assert_eq!(ham["milter"]["add_headers"]["X-Spam-Status"]["value"], "No, score=-0.10", "{ham}");

    let gtube = check(&rspamd, &message("GTUBE", &[], GTUBE), &[]);
    assert_eq!(gtube["action"], "reject", "{gtube}");
    assert_eq!(gtube["messages"]["smtp_message"], "Gtube pattern", "{gtube}");
    assert!(gtube["symbols"]["GTUBE"].is_object(), "{gtube}");
    // Not even a whitelisting Settings header overrides GTUBE.
    let whitelisted = check(&rspamd, &message("GTUBE", &[], GTUBE), &[("Settings", r#"{"whitelist": true}"#)]);
    assert_eq!(whitelisted["action"], "reject", "{whitelisted}");

    let add_header = check(&rspamd, &message("Add", &[], GTUBE_ADD_HEADER), &[]);
    assert_eq!(add_header["action"], "add header", "{add_header}");
    let rewrite = check(&rspamd, &message("Offer", &[], GTUBE_REWRITE_SUBJECT), &[]);
    assert_eq!(rewrite["action"], "rewrite subject", "{rewrite}");
    assert_eq!(rewrite["subject"], format!("{SUBJECT_PREFIX}Offer"), "{rewrite}");

    let soft = check(&rspamd, &message("Later", &[(ACTION_HEADER, "soft reject")], &ham_text(2)), &[]);
    assert_eq!(soft["action"], "soft reject", "{soft}");
    assert_eq!(soft["messages"]["smtp_message"], "Tern test action soft reject", "{soft}");
    let greylist = check(&rspamd, &message("Grey", &[(ACTION_HEADER, "greylist")], &ham_text(3)), &[]);
    assert_eq!(greylist["action"], "greylist", "{greylist}");
    // The forced action runs after the request's settings, so a whitelist wins over it.
    let forced = message("Forced", &[(ACTION_HEADER, "reject")], &ham_text(4));
    let whitelisted = check(&rspamd, &forced, &[("Settings", r#"{"whitelist": true}"#)]);
    assert_eq!(whitelisted["action"], "no action", "{whitelisted}");
    assert_eq!(whitelisted["is_skipped"], true, "{whitelisted}");

    let scored = check(&rspamd, &message("Scored", &[(SCORE_HEADER, "7")], &ham_text(5)), &[]);
    assert_eq!(scored["action"], "add header", "{scored}");
    assert_eq!(scored["symbols"]["TERN_TEST_SCORE"]["score"], 7.0, "{scored}");
    assert_eq!(scored["milter"]["add_headers"]["X-Spam"]["value"], "Yes", "{scored}");
    // Settings can turn an action off for one request: with no reject, 16 points rewrite the
    // subject.
    let scored = message("Scored", &[(SCORE_HEADER, "16")], &ham_text(6));
    assert_eq!(check(&rspamd, &scored, &[])["action"], "reject");
    let no_reject = check(&rspamd, &scored, &[("Settings", r#"{"actions": {"reject": null}}"#)]);
    assert_eq!(no_reject["action"], "rewrite subject", "{no_reject}");

    // The harness's own client says the same.
    assert_eq!(rspamd.check(&message("GTUBE", &[], GTUBE), &[]).await["action"], "reject");
}

#[tokio::test]
#[ignore = "needs rspamd and redis-server (Debian packages); run by cargo xtask ci"]
async fn rspamd_learns_per_user_and_the_counts_are_read_back() {
    let rspamd = Rspamd::start().await;
    assert_eq!(rspamd.learned(ALICE).await, 0);

    let spam = message("Offer", &[], &spam_text(1));
    let (status, body) = post(rspamd.controller_addr, "/learnspam", &[("Deliver-To", ALICE)], &spam);
    assert_eq!((status, body.as_slice()), (200, &br#"{"success":true}"#[..]));
    assert_eq!(rspamd.learned_spam_ham(ALICE).await, (1, 0));
    assert_eq!(rspamd.learned(BOB).await, 0);
    // The same message again for the same user is refused with 208, and not counted.
    let (status, body) = post(rspamd.controller_addr, "/learnspam", &[("Deliver-To", ALICE)], &spam);
    assert_eq!(status, 208, "{}", String::from_utf8_lossy(&body));
    assert_eq!(rspamd.learned(ALICE).await, 1);
    // Another user's statistics are their own, so the same message is new to them.
    rspamd.learn_spam(BOB, &spam).await;
    assert_eq!(rspamd.learned_spam_ham(BOB).await, (1, 0));

    rspamd.learn_spam(ALICE, &message("Offer", &[], &spam_text(2))).await;
    rspamd.learn_ham(ALICE, &message("Report", &[], &ham_text(1))).await;
    assert_eq!(rspamd.learned_spam_ham(ALICE).await, (2, 1));
    assert_eq!(rspamd.learned(ALICE).await, 3);

    // Two spams and a ham are enough for Alice's statistics to call the next offer spam, and
    // Bob's (one spam, no ham) are not enough to call anything.
    let next = message("Offer", &[], &spam_text(3));
    let verdict = rspamd.check(&next, &[("Deliver-To", ALICE)]).await;
    assert!(verdict["symbols"]["BAYES_SPAM"].is_object(), "{verdict}");
    let verdict = rspamd.check(&next, &[("Deliver-To", BOB)]).await;
    assert!(verdict["symbols"].get("BAYES_SPAM").is_none(), "{verdict}");
}

#[tokio::test]
async fn the_dnsbl_answers_a_real_resolver_and_counts_what_reaches_it() {
    let dnsbl = DnsBl::start("bl.test");
    let listed: IpAddr = Ipv4Addr::new(192, 0, 2, 1).into();
    let clean: IpAddr = Ipv4Addr::new(192, 0, 2, 2).into();
    dnsbl.list_with(listed, Ipv4Addr::new(127, 0, 0, 2), Some("listed for the test"));

    let mut server = NameServerConfig::udp(dnsbl.addr.ip());
    for connection in &mut server.connections {
        connection.port = dnsbl.addr.port();
    }
    let mut builder = TokioResolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![server]),
        TokioRuntimeProvider::default(),
    );
    *builder.options_mut() = {
        let mut opts = ResolverOpts::default();
        opts.timeout = Duration::from_secs(2);
        opts.attempts = 1;
        opts
    };
    let resolver = builder.build().expect("a resolver");

    let name = format!("{}.", dnsbl.name_for(listed));
    let a = resolver.ipv4_lookup(name.as_str()).await.expect("the listed address resolves");
    let answers: Vec<Ipv4Addr> =
        a.answers().iter().filter_map(|r| if let RData::A(a) = &r.data { Some(a.0) } else { None }).collect();
    assert_eq!(answers, [Ipv4Addr::new(127, 0, 0, 2)]);
    let txt = resolver.txt_lookup(name.as_str()).await.expect("the listing has a reason");
    let reason: Vec<String> = txt
        .answers()
        .iter()
        .filter_map(|r| if let RData::TXT(t) = &r.data { Some(t.to_string()) } else { None })
        .collect();
    assert_eq!(reason, ["listed for the test"]);
    assert!(resolver.ipv4_lookup(format!("{}.", dnsbl.name_for(clean))).await.is_err(), "NXDOMAIN");
    assert_eq!(dnsbl.queries_for(listed), 2);
    assert_eq!(dnsbl.queries_for(clean), 1);

    // The resolver caches the answer for its TTL, so asking again does not reach the server.
    resolver.ipv4_lookup(name.as_str()).await.expect("still listed");
    assert_eq!(dnsbl.queries_for(listed), 2);
    assert_eq!(dnsbl.queries(), 3);
}
