//! An Apple configuration profile (`.mobileconfig`) that adds one mail account to iOS, iPadOS
//! or macOS: an unsigned XML property list with one `com.apple.mail.managed` payload, the
//! preferred IMAP server (or POP3's, without IMAP) and submission server, the user name being
//! the address.
//!
//! The profile's and the payload's `PayloadUUID`s are derived from the address, so that the
//! profile downloaded again is the same profile (installing it replaces the earlier one rather
//! than adding a second account).

use sha2::{Digest, Sha256};

use crate::{Address, Endpoints, Server, xml};

/// The content type Apple's devices open as a profile.
pub const CONTENT_TYPE: &str = "application/x-apple-aspen-config";

/// The profile for `address`.
pub fn profile(endpoints: &Endpoints, address: &Address) -> String {
    let (incoming_type, incoming) = match (endpoints.imap.first(), endpoints.pop3.first()) {
        (Some(imap), _) => ("EmailTypeIMAP", Some(imap)),
        (None, pop3) => ("EmailTypePOP", pop3),
    };
    let domain = address.domain();
    let name = endpoints.display_name(domain);
    // Reverse-DNS identifiers under the mail domain, unique per address by its hash.
    let reversed: Vec<&str> = domain.rsplit('.').collect();
    let identifier = format!("{}.mail.{}", reversed.join("."), &hex(&digest(address, "identifier"))[..16]);

    let mut account = Dict::default();
    account.string("EmailAccountDescription", &format!("{name} ({address})"));
    account.string("EmailAccountType", incoming_type);
    account.string("EmailAddress", address.as_str());
    if let Some(server) = incoming {
        push_server(&mut account, "Incoming", server, address);
    }
    if let Some(server) = endpoints.smtp.first() {
        push_server(&mut account, "Outgoing", server, address);
        account.boolean("OutgoingPasswordSameAsIncomingPassword", true);
    }
    account.string("PayloadDescription", &format!("The mail account {address}"));
    account.string("PayloadDisplayName", &format!("Mail: {address}"));
    account.string("PayloadIdentifier", &format!("{identifier}.account"));
    account.string("PayloadType", "com.apple.mail.managed");
    account.string("PayloadUUID", &uuid(address, "account"));
    account.integer("PayloadVersion", 1);

    let mut top = Dict::default();
    top.raw("PayloadContent", &format!("<array>\n<dict>\n{}</dict>\n</array>", account.0));
    top.string("PayloadDescription", &format!("Sets up the mail account {address} of {name}."));
    top.string("PayloadDisplayName", &format!("{name} mail: {address}"));
    top.string("PayloadIdentifier", &identifier);
    top.boolean("PayloadRemovalDisallowed", false);
    top.string("PayloadType", "Configuration");
    top.string("PayloadUUID", &uuid(address, "profile"));
    top.integer("PayloadVersion", 1);
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
         <plist version=\"1.0\">\n<dict>\n{}</dict>\n</plist>\n",
        top.0
    )
}

/// `Incoming…` or `Outgoing…` keys for `server`. `…UseSSL` is true for STARTTLS ports too:
/// Apple's clients then upgrade the connection, and never send the password in clear.
fn push_server(dict: &mut Dict, prefix: &str, server: &Server, address: &Address) {
    dict.string(&format!("{prefix}MailServerAuthentication"), "EmailAuthPassword");
    dict.string(&format!("{prefix}MailServerHostName"), &server.host);
    dict.integer(&format!("{prefix}MailServerPortNumber"), server.port.into());
    dict.boolean(&format!("{prefix}MailServerUseSSL"), true);
    dict.string(&format!("{prefix}MailServerUsername"), address.as_str());
}

/// The body of a plist `<dict>`, key by key.
#[derive(Default)]
struct Dict(String);

impl Dict {
    fn raw(&mut self, key: &str, value: &str) {
        self.0.push_str(&format!("<key>{}</key>\n{value}\n", xml::text(key)));
    }

    fn string(&mut self, key: &str, value: &str) {
        self.raw(key, &format!("<string>{}</string>", xml::text(value)));
    }

    fn integer(&mut self, key: &str, value: u32) {
        self.raw(key, &format!("<integer>{value}</integer>"));
    }

    fn boolean(&mut self, key: &str, value: bool) {
        self.raw(key, if value { "<true/>" } else { "<false/>" });
    }
}

fn digest(address: &Address, purpose: &str) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(b"tern-discovery mobileconfig\0");
    hash.update(purpose.as_bytes());
    hash.update(b"\0");
    hash.update(address.as_str().as_bytes());
    hash.finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A UUID made of the address's hash for `purpose`: RFC 9562's version 8 (custom), variant
/// 10, in Apple's upper-case form.
fn uuid(address: &Address, purpose: &str) -> String {
    let mut b = digest(address, purpose);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b[..16]).to_ascii_uppercase();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::endpoints;

    #[test]
    fn the_profile_names_the_preferred_servers() {
        let address = Address::parse("alice@example.com").unwrap();
        let doc = profile(&endpoints(), &address);
        assert!(doc.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist"));
        for (key, value) in [
            ("EmailAccountType", "<string>EmailTypeIMAP</string>"),
            ("EmailAddress", "<string>alice@example.com</string>"),
            ("IncomingMailServerHostName", "<string>imap.example.net</string>"),
            ("IncomingMailServerPortNumber", "<integer>993</integer>"),
            ("IncomingMailServerUseSSL", "<true/>"),
            ("IncomingMailServerUsername", "<string>alice@example.com</string>"),
            ("OutgoingMailServerHostName", "<string>smtp.example.net</string>"),
            ("OutgoingMailServerPortNumber", "<integer>465</integer>"),
            ("PayloadType", "<string>com.apple.mail.managed</string>"),
            ("PayloadType", "<string>Configuration</string>"),
            ("PayloadIdentifier", "<string>com.example.mail."),
        ] {
            assert!(doc.contains(&format!("<key>{key}</key>\n{value}")), "{key} {value}:\n{doc}");
        }
        // Without IMAP, POP3.
        let mut pop = endpoints();
        pop.imap.clear();
        let doc = profile(&pop, &address);
        assert!(doc.contains("<string>EmailTypePOP</string>") && doc.contains("<integer>995</integer>"));
    }

    #[test]
    fn uuids_are_stable_per_address_and_purpose() {
        let alice = Address::parse("alice@example.com").unwrap();
        let bob = Address::parse("bob@example.com").unwrap();
        let id = uuid(&alice, "profile");
        assert_eq!(id, uuid(&alice, "profile"));
        assert_ne!(id, uuid(&alice, "account"));
        assert_ne!(id, uuid(&bob, "profile"));
        assert_eq!(id.len(), 36);
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12]);
        assert!(parts[2].starts_with('8'), "version 8: {id}");
        assert!(matches!(parts[3].as_bytes()[0], b'8' | b'9' | b'A' | b'B'), "variant 10: {id}");
        assert_eq!(profile(&endpoints(), &alice), profile(&endpoints(), &alice));
    }

    #[test]
    fn values_are_escaped() {
        let mut e = endpoints();
        e.display_name = Some("A & B <Mail>".into());
        let doc = profile(&e, &Address::parse("o'brien@example.com").unwrap());
        assert!(doc.contains("<string>A &amp; B &lt;Mail&gt; (o'brien@example.com)</string>"), "{doc}");
        assert!(!doc.contains("<Mail>"));
    }
}
