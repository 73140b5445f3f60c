//! Outlook's Autodiscover in its plain-old-XML form: the request Outlook (and other clients
//! that speak it) posts to `https://autodiscover.<domain>/autodiscover/autodiscover.xml`, and
//! the answer in the `outlook/responseschema/2006a` schema, one `Protocol` per protocol with
//! the preferred server of each.
//!
//! The request is parsed with quick-xml, which reads no DTD and expands no entity but the five
//! XML predefines and character references: a `<!DOCTYPE>` is refused outright, so no entity
//! tricks reach this code. Only element local names are compared (clients disagree on
//! prefixes), and nothing of the body is ever repeated in an error.

use quick_xml::events::Event;

use crate::{Address, AddressError, Endpoints, Security, Server, xml};

/// The response schema Outlook asks for, the only one answered.
pub const OUTLOOK_SCHEMA: &str = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a";
/// The namespace of the response's root element.
pub const RESPONSE_NAMESPACE: &str = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006";
/// The largest request body read; Outlook's are a few hundred bytes.
pub const MAX_REQUEST: usize = 16 * 1024;
/// The content type the response is served with.
pub const CONTENT_TYPE: &str = "application/xml; charset=utf-8";

/// Elements nested deeper than this are not a request.
const MAX_DEPTH: usize = 8;

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub address: Address,
}

/// Why a request was refused (a 400, said in plain text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("the request body is empty: POST an Autodiscover request")]
    Empty,
    #[error("the request body is larger than {MAX_REQUEST} bytes")]
    TooLarge,
    #[error("the request body is not well-formed XML (at byte {0})")]
    NotXml(u64),
    #[error("the request must not have a document type declaration")]
    Doctype,
    #[error("the request's elements are nested too deeply")]
    TooDeep,
    #[error("the request is not an Autodiscover request (an Autodiscover element holding a Request)")]
    NotAutodiscover,
    #[error("the request has no EMailAddress")]
    NoAddress,
    #[error("EMailAddress: {0}")]
    Address(#[from] AddressError),
    #[error("only the response schema {OUTLOOK_SCHEMA} is served")]
    UnsupportedSchema,
}

/// Parses the body of an Autodiscover request.
pub fn parse_request(body: &[u8]) -> Result<Request, RequestError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(RequestError::Empty);
    }
    if body.len() > MAX_REQUEST {
        return Err(RequestError::TooLarge);
    }
    let mut reader = quick_xml::Reader::from_reader(body);
    reader.config_mut().trim_text(true);
    let mut path: Vec<String> = Vec::new();
    let (mut address, mut schema) = (None::<String>, None::<String>);
    let mut seen_root = false;
    let mut buf = Vec::new();
    loop {
        let event = reader.read_event_into(&mut buf).map_err(|_| RequestError::NotXml(reader.error_position()))?;
        // Text goes to the field whose element is open, when it is one of the two read.
        let field = match path.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            ["Autodiscover", "Request", "EMailAddress"] => Some(&mut address),
            ["Autodiscover", "Request", "AcceptableResponseSchema"] => Some(&mut schema),
            _ => None,
        };
        let not_xml = |reader: &quick_xml::Reader<&[u8]>| RequestError::NotXml(reader.buffer_position());
        match event {
            Event::DocType(_) => return Err(RequestError::Doctype),
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if path.is_empty() {
                    if seen_root || name != "Autodiscover" {
                        return Err(RequestError::NotAutodiscover);
                    }
                    seen_root = true;
                }
                path.push(name);
                if path.len() > MAX_DEPTH {
                    return Err(RequestError::TooDeep);
                }
            }
            Event::Empty(_) if path.is_empty() => return Err(RequestError::NotAutodiscover),
            Event::End(_) => {
                path.pop();
            }
            Event::Text(t) => {
                if let Some(field) = field {
                    field.get_or_insert_default().push_str(&t.decode().map_err(|_| not_xml(&reader))?);
                }
            }
            Event::CData(t) => {
                if let Some(field) = field {
                    field.get_or_insert_default().push_str(&t.decode().map_err(|_| not_xml(&reader))?);
                }
            }
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref().map_err(|_| not_xml(&reader))? {
                    Some(c) => c,
                    None => match r.as_ref() {
                        b"amp" => '&',
                        b"lt" => '<',
                        b"gt" => '>',
                        b"quot" => '"',
                        b"apos" => '\'',
                        // An entity no DTD declares (and none may be declared).
                        _ => return Err(not_xml(&reader)),
                    },
                };
                if let Some(field) = field {
                    field.get_or_insert_default().push(c);
                }
            }
            Event::Eof => break,
            Event::Empty(_) | Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
        }
        buf.clear();
    }
    if !seen_root || !path.is_empty() {
        return Err(RequestError::NotAutodiscover);
    }
    // Outlook always names the schema; a client that leaves it out gets Outlook's.
    if let Some(schema) = schema
        && schema.trim() != OUTLOOK_SCHEMA
    {
        return Err(RequestError::UnsupportedSchema);
    }
    let address = address.ok_or(RequestError::NoAddress)?;
    Ok(Request { address: Address::parse(address.trim())? })
}

/// The answer for `address`: an `email` account with the preferred server of each protocol
/// (`Encryption` SSL for implicit TLS, TLS for STARTTLS, with `SSL` on for both), the login
/// name being the address.
pub fn response(endpoints: &Endpoints, address: &Address) -> String {
    let mut out = String::with_capacity(2048);
    out.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    out.push_str(&format!("<Autodiscover xmlns=\"{RESPONSE_NAMESPACE}\">\n"));
    out.push_str(&format!("  <Response xmlns=\"{OUTLOOK_SCHEMA}\">\n"));
    out.push_str("    <Account>\n      <AccountType>email</AccountType>\n      <Action>settings</Action>\n");
    for (type_, servers) in [("IMAP", &endpoints.imap), ("POP3", &endpoints.pop3), ("SMTP", &endpoints.smtp)] {
        if let Some(server) = servers.first() {
            push_protocol(&mut out, type_, server, address);
        }
    }
    out.push_str("    </Account>\n  </Response>\n</Autodiscover>\n");
    out
}

fn push_protocol(out: &mut String, type_: &str, server: &Server, address: &Address) {
    let encryption = match server.security {
        Security::Tls => "SSL",
        Security::StartTls => "TLS",
    };
    out.push_str("      <Protocol>\n");
    out.push_str(&format!("        <Type>{type_}</Type>\n"));
    out.push_str(&format!("        <Server>{}</Server>\n", xml::text(&server.host)));
    out.push_str(&format!("        <Port>{}</Port>\n", server.port));
    out.push_str(&format!("        <LoginName>{}</LoginName>\n", xml::text(address.as_str())));
    out.push_str("        <DomainRequired>off</DomainRequired>\n");
    out.push_str("        <SPA>off</SPA>\n");
    out.push_str("        <SSL>on</SSL>\n");
    out.push_str(&format!("        <Encryption>{encryption}</Encryption>\n"));
    out.push_str("        <AuthRequired>on</AuthRequired>\n");
    if type_ == "SMTP" {
        out.push_str("        <UsePOPAuth>off</UsePOPAuth>\n        <SMTPLast>off</SMTPLast>\n");
    }
    out.push_str("      </Protocol>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::endpoints;

    fn request(address: &str) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006\">\n  <Request>\n    <EMailAddress>{address}</EMailAddress>\n    <AcceptableResponseSchema>{OUTLOOK_SCHEMA}</AcceptableResponseSchema>\n  </Request>\n</Autodiscover>\n"
        )
    }

    #[test]
    fn outlooks_request_is_read() {
        let r = parse_request(request("Alice@Example.com").as_bytes()).unwrap();
        assert_eq!(r.address.as_str(), "Alice@example.com");
        // Prefixes, CDATA, references and a missing schema are all fine.
        let prefixed = "<a:Autodiscover xmlns:a=\"x\"><a:Request><a:EMailAddress><![CDATA[bob]]>&#64;example.com</a:EMailAddress></a:Request></a:Autodiscover>";
        assert_eq!(parse_request(prefixed.as_bytes()).unwrap().address.as_str(), "bob@example.com");
        let apostrophe = request("o&apos;brien@example.com");
        assert_eq!(parse_request(apostrophe.as_bytes()).unwrap().address.local_part(), "o'brien");
    }

    #[test]
    fn bad_requests_are_refused_with_a_reason() {
        let cases: Vec<(Vec<u8>, RequestError)> = vec![
            (b"".to_vec(), RequestError::Empty),
            (b"  \n".to_vec(), RequestError::Empty),
            (vec![b'<'; MAX_REQUEST + 1], RequestError::TooLarge),
            (b"<Autodiscover><Request>".to_vec(), RequestError::NotAutodiscover),
            (b"<Autodiscover><Request></Autodiscover>".to_vec(), RequestError::NotXml(0)),
            (b"not xml at all".to_vec(), RequestError::NotAutodiscover),
            (b"<Other><Request><EMailAddress>a@example.com</EMailAddress></Request></Other>".to_vec(), RequestError::NotAutodiscover),
            (b"<Autodiscover/>".to_vec(), RequestError::NotAutodiscover),
            (b"<Autodiscover><Request/></Autodiscover>".to_vec(), RequestError::NoAddress),
            (b"<Autodiscover><Request><LegacyDN>/o=x</LegacyDN></Request></Autodiscover>".to_vec(), RequestError::NoAddress),
            (request("a&lt;b@example.com").into_bytes(), RequestError::Address(AddressError::BadLocalPart)),
            (request(&format!("{}@example.com", "a".repeat(300))).into_bytes(), RequestError::Address(AddressError::TooLong)),
            (
                b"<!DOCTYPE x [<!ENTITY e \"a@example.com\">]><Autodiscover><Request><EMailAddress>&e;</EMailAddress></Request></Autodiscover>".to_vec(),
                RequestError::Doctype,
            ),
            (b"<Autodiscover><Request><EMailAddress>&e;</EMailAddress></Request></Autodiscover>".to_vec(), RequestError::NotXml(0)),
            (
                request("a@example.com")
                    .replace(OUTLOOK_SCHEMA, "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006")
                    .into_bytes(),
                RequestError::UnsupportedSchema,
            ),
            (
                format!("<Autodiscover>{}</Autodiscover>", "<x>".repeat(10) + &"</x>".repeat(10)).into_bytes(),
                RequestError::TooDeep,
            ),
        ];
        for (body, want) in cases {
            let got = parse_request(&body).unwrap_err();
            // Positions depend on quick-xml; the kind of error is what matters.
            match (&got, &want) {
                (RequestError::NotXml(_), RequestError::NotXml(_)) => {}
                _ => assert_eq!(got, want, "{}", String::from_utf8_lossy(&body)),
            }
        }
    }

    #[test]
    fn the_response_names_each_protocols_preferred_server() {
        let address = Address::parse("alice@example.com").unwrap();
        let doc = response(&endpoints(), &address);
        assert!(doc.contains(&format!("<Autodiscover xmlns=\"{RESPONSE_NAMESPACE}\">")));
        assert!(doc.contains(&format!("<Response xmlns=\"{OUTLOOK_SCHEMA}\">")));
        assert!(doc.contains("<Type>IMAP</Type>\n        <Server>imap.example.net</Server>\n        <Port>993</Port>\n        <LoginName>alice@example.com</LoginName>"), "{doc}");
        assert!(doc.contains("<Type>POP3</Type>\n        <Server>pop.example.net</Server>\n        <Port>995</Port>"));
        assert!(doc.contains("<Type>SMTP</Type>\n        <Server>smtp.example.net</Server>\n        <Port>465</Port>"));
        assert_eq!(doc.matches("<Protocol>").count(), 3);
        assert_eq!(doc.matches("<Encryption>SSL</Encryption>").count(), 3);

        let mut starttls = endpoints();
        starttls.smtp.remove(0);
        let doc = response(&starttls, &Address::parse("o'brien@example.com").unwrap());
        assert!(doc.contains("<Port>587</Port>\n        <LoginName>o'brien@example.com</LoginName>"), "{doc}");
        assert!(doc.contains("<Encryption>TLS</Encryption>"));
    }
}
