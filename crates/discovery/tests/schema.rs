//! The autoconfig documents against Thunderbird's file format, as `schema/clientConfig-v1.1.xsd`
//! writes it down, checked by libxml2's `xmllint --schema` (Debian's libxml2-utils, which
//! `cargo xtask ci` installs): every shape of endpoints Tern can be configured with, and, so that
//! the schema is known to check something, a document in the documented format that it must
//! take and broken ones it must refuse.

use std::{path::Path, process::Command};

use tern_discovery::{Endpoints, Security, Server, autoconfig};

const SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/clientConfig-v1.1.xsd");

/// Whether `xmllint` finds `document` valid, and what it said.
fn validate(document: &str) -> (bool, String) {
    let dir = tempfile_dir();
    let file = dir.join(format!("doc-{}.xml", unique()));
    std::fs::write(&file, document).unwrap();
    let out = Command::new("xmllint")
        .args(["--noout", "--nonet", "--schema", SCHEMA])
        .arg(&file)
        .output()
        .expect("xmllint runs: install the Debian package libxml2-utils");
    let _ = std::fs::remove_file(&file);
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join("tern-discovery-schema");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

fn server(host: &str, port: u16, security: Security) -> Server {
    Server { host: host.into(), port, security }
}

#[test]
fn the_schema_is_there() {
    assert!(Path::new(SCHEMA).is_file());
}

#[test]
fn every_shape_of_endpoints_gives_a_valid_document() {
    let full = Endpoints {
        imap: vec![server("imap.example.net", 993, Security::Tls), server("imap.example.net", 143, Security::StartTls)],
        pop3: vec![server("pop.example.net", 995, Security::Tls), server("pop.example.net", 110, Security::StartTls)],
        smtp: vec![server("smtp.example.net", 465, Security::Tls), server("smtp.example.net", 587, Security::StartTls)],
        display_name: Some("Example & Co. <Mail>".into()),
        mta_sts: None,
    };
    let imap_only = Endpoints {
        imap: vec![server("localhost", 1993, Security::Tls)],
        pop3: vec![],
        smtp: vec![server("localhost", 5587, Security::StartTls)],
        display_name: None,
        mta_sts: None,
    };
    let pop3_only = Endpoints {
        imap: vec![],
        pop3: vec![server("mail.example.org", 995, Security::Tls)],
        smtp: vec![server("mail.example.org", 465, Security::Tls)],
        display_name: None,
        mta_sts: None,
    };
    for endpoints in [full, imap_only, pop3_only] {
        endpoints.check().unwrap();
        for domain in ["example.com", "localhost", "bücher.example"] {
            let document = autoconfig::document(&endpoints, domain);
            let (valid, said) = validate(&document);
            assert!(valid, "xmllint refuses the document:\n{said}\n{document}");
        }
    }
}

#[test]
fn the_schema_takes_the_documented_format_and_refuses_broken_documents() {
    let documented = r#"<?xml version="1.0" encoding="UTF-8"?>
<clientConfig version="1.1">
  <emailProvider id="example.com">
    <domain>example.com</domain>
    <domain>example.net</domain>
    <displayName>Example Mail</displayName>
    <displayShortName>Example</displayShortName>
    <incomingServer type="pop3">
      <hostname>pop.example.com</hostname>
      <port>995</port>
      <socketType>SSL</socketType>
      <username>%EMAILLOCALPART%</username>
      <authentication>password-encrypted</authentication>
      <pop3>
        <leaveMessagesOnServer>true</leaveMessagesOnServer>
      </pop3>
    </incomingServer>
    <outgoingServer type="smtp">
      <hostname>smtp.%EMAILDOMAIN%</hostname>
      <port>587</port>
      <socketType>STARTTLS</socketType>
      <username>%EMAILADDRESS%</username>
      <authentication>password-cleartext</authentication>
      <addThisServer>true</addThisServer>
      <useGlobalPreferredServer>false</useGlobalPreferredServer>
    </outgoingServer>
    <documentation url="https://example.com/help">
      <descr lang="en">Generic settings page</descr>
    </documentation>
  </emailProvider>
</clientConfig>
"#;
    let (valid, said) = validate(documented);
    assert!(valid, "{said}");
    for (broken, why) in [
        (documented.replace(">SSL<", ">TLS<"), "an unknown socketType"),
        (documented.replace("<port>995</port>", "<port>0</port>"), "port 0"),
        (documented.replace("version=\"1.1\"", "version=\"1.0\""), "another version"),
        (documented.replace("type=\"pop3\"", "type=\"jmap\""), "an unknown server type"),
        (documented.replace("<hostname>pop.example.com</hostname>", ""), "a server without a host name"),
        (documented.replace("password-encrypted", "password"), "an unknown authentication"),
        (documented.replace("<displayName>Example Mail</displayName>", ""), "no displayName"),
        (
            documented.replace(
                "<hostname>pop.example.com</hostname>\n      <port>995</port>",
                "<port>995</port>\n      <hostname>pop.example.com</hostname>",
            ),
            "elements out of order",
        ),
    ] {
        let (valid, _) = validate(&broken);
        assert!(!valid, "the schema takes a document with {why}");
    }
}
