//! Thunderbird's autoconfig: the `clientConfig` document (version 1.1) that Thunderbird,
//! Thunderbird for Android (K-9), Evolution and KMail fetch from
//! `https://autoconfig.<domain>/mail/config-v1.1.xml` and
//! `https://<domain>/.well-known/autoconfig/mail/config-v1.1.xml`, each with
//! `?emailaddress=<address>`.
//!
//! Every server is listed, in the order of [`Endpoints`] (the client tries them in that
//! order); the user name is the placeholder `%EMAILADDRESS%`, which the client fills in, since
//! Tern's login name is the full address; passwords go in clear over the TLS the socket type
//! names (`password-cleartext`).

use crate::{Endpoints, Security, Server, xml};

/// The content type the document is served with.
pub const CONTENT_TYPE: &str = "application/xml; charset=utf-8";

/// The document for the mail domain `domain` (the domain of the address asked about, or of the
/// `autoconfig.<domain>` host when no address was given), which must be a checked domain
/// ([`crate::address::mail_domain`]).
pub fn document(endpoints: &Endpoints, domain: &str) -> String {
    let mut out = String::with_capacity(2048);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<clientConfig version=\"1.1\">\n");
    out.push_str(&format!("  <emailProvider id=\"{}\">\n", xml::attribute(domain)));
    out.push_str(&format!("    <domain>{}</domain>\n", xml::text(domain)));
    out.push_str(&format!("    <displayName>{}</displayName>\n", xml::text(endpoints.display_name(domain))));
    let short = match &endpoints.display_name {
        Some(name) => name.as_str(),
        None => domain.split('.').next().unwrap_or(domain),
    };
    out.push_str(&format!("    <displayShortName>{}</displayShortName>\n", xml::text(short)));
    for server in &endpoints.imap {
        push_server(&mut out, "incomingServer", "imap", server);
    }
    for server in &endpoints.pop3 {
        push_server(&mut out, "incomingServer", "pop3", server);
    }
    for server in &endpoints.smtp {
        push_server(&mut out, "outgoingServer", "smtp", server);
    }
    out.push_str("  </emailProvider>\n</clientConfig>\n");
    out
}

fn push_server(out: &mut String, element: &str, type_: &str, server: &Server) {
    let socket_type = match server.security {
        Security::Tls => "SSL",
        Security::StartTls => "STARTTLS",
    };
    out.push_str(&format!("    <{element} type=\"{type_}\">\n"));
    out.push_str(&format!("      <hostname>{}</hostname>\n", xml::text(&server.host)));
    out.push_str(&format!("      <port>{}</port>\n", server.port));
    out.push_str(&format!("      <socketType>{socket_type}</socketType>\n"));
    out.push_str("      <username>%EMAILADDRESS%</username>\n");
    out.push_str("      <authentication>password-cleartext</authentication>\n");
    out.push_str(&format!("    </{element}>\n"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::endpoints;

    #[test]
    fn every_server_is_described_in_order() {
        let doc = document(&endpoints(), "example.com");
        assert!(doc.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<clientConfig version=\"1.1\">"));
        assert!(doc.contains("<emailProvider id=\"example.com\">\n    <domain>example.com</domain>"));
        assert!(doc.contains("<displayName>example.com</displayName>"));
        assert!(doc.contains("<displayShortName>example</displayShortName>"));
        let imaps =
            doc.find("<hostname>imap.example.net</hostname>\n      <port>993</port>\n      <socketType>SSL<").unwrap();
        let imap = doc.find("<port>143</port>\n      <socketType>STARTTLS<").unwrap();
        let pop3s = doc
            .find("<incomingServer type=\"pop3\">\n      <hostname>pop.example.net</hostname>\n      <port>995<")
            .unwrap();
        let submissions = doc.find("<outgoingServer type=\"smtp\">\n      <hostname>smtp.example.net</hostname>\n      <port>465</port>\n      <socketType>SSL<").unwrap();
        let submission = doc.find("<port>587</port>\n      <socketType>STARTTLS<").unwrap();
        assert!(imaps < imap && imap < pop3s && pop3s < submissions && submissions < submission, "{doc}");
        assert_eq!(doc.matches("<username>%EMAILADDRESS%</username>").count(), 6);
        assert_eq!(doc.matches("<authentication>password-cleartext</authentication>").count(), 6);
    }

    #[test]
    fn values_are_escaped() {
        let mut e = endpoints();
        e.display_name = Some("Bob & \"Alice\" <Mail>".into());
        let doc = document(&e, "example.com");
        assert!(doc.contains("<displayName>Bob &amp; \"Alice\" &lt;Mail&gt;</displayName>"), "{doc}");
        assert!(!doc.contains("<Mail>"));
        // A domain is checked before it gets here; even so nothing of it could break out.
        let doc = document(&endpoints(), "a\"><b>.example");
        assert!(doc.contains("id=\"a&quot;&gt;&lt;b&gt;.example\""), "{doc}");
        assert!(!doc.contains("<b>"));
    }
}
