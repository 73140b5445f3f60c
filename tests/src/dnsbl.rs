//! A DNS blocklist of the test's own: a tiny authoritative DNS server on a loopback UDP port that
//! serves one zone (`bl.test`, say) the way DNSBLs do. A test lists addresses (`127.0.0.1` is
//! asked for as `1.0.0.127.bl.test`, an IPv6 address as its 32 reversed nibbles) or names (the
//! right-hand-side lists: `spam.example.bl.test`), and the server answers A queries for them
//! with `127.0.0.2` (or the code the test chose) and TXT queries with the reason, if one was
//! given. Any other name under the zone is NXDOMAIN, other record types of a listed name have no
//! data, and names outside the zone are refused. Negative answers carry the zone's SOA, whose
//! minimum is the TTL, so resolvers cache them as they would a real list's.
//!
//! It counts the queries it receives, per name, so that a test can check that its client caches
//! answers. It speaks only what the tests need of RFC 1035 (one question per query, no
//! compression in queries, no TCP, no EDNS: an OPT record in a query is ignored and the answer
//! carries none), written by hand here so that no DNS server crate is needed.
//!
//! The server runs on a thread of its own, not on a Tokio runtime, so that it answers whichever
//! runtime (or blocking code) the client runs on; dropping the [`DnsBl`] stops it.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

/// The answer to an A query for a listed entry when the test did not choose one: the usual
/// "listed" code of DNSBLs.
pub const LISTED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// The TTL of answers, positive and negative, unless the test sets another.
pub const DEFAULT_TTL: u32 = 300;

/// How often the server thread looks at the stop flag while no query arrives.
const POLL: Duration = Duration::from_millis(50);

/// The record types and classes the server knows.
const TYPE_A: u16 = 1;
const TYPE_SOA: u16 = 6;
const TYPE_TXT: u16 = 16;
const CLASS_IN: u16 = 1;

/// Response codes.
const NOERROR: u8 = 0;
const FORMERR: u8 = 1;
const NXDOMAIN: u8 = 3;
const NOTIMP: u8 = 4;
const REFUSED: u8 = 5;

/// What a listed entry answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The A record: [`LISTED`] unless the test chose another code.
    pub code: Ipv4Addr,
    /// The TXT record (the listing's reason), if any.
    pub reason: Option<String>,
}

/// The zone, what is listed in it and what was asked: shared between the handle and the server
/// thread.
#[derive(Debug)]
struct State {
    /// The zone's name, in lower case, without the final dot.
    zone: String,
    /// Listed entries by the labels before the zone (`1.0.0.127`, `spam.example`), lower case.
    listed: HashMap<String, Listing>,
    ttl: u32,
    /// Queries received, by the name asked for (lower case, without the final dot).
    queries: HashMap<String, u64>,
    total: u64,
}

/// A running DNSBL server; stopped when dropped.
#[derive(Debug)]
pub struct DnsBl {
    /// The UDP address to send queries to.
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DnsBl {
    /// Starts a server for `zone` (`bl.test`; a final dot is allowed) on a free loopback UDP
    /// port, with nothing listed yet.
    pub fn start(zone: &str) -> DnsBl {
        let zone = zone.trim_end_matches('.').to_ascii_lowercase();
        assert!(!zone.is_empty() && encode_name(&zone).is_some(), "{zone:?} is not a zone name");
        // Binding port 0 lets the kernel pick a free port, with no window for another process.
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a loopback UDP port");
        socket.set_read_timeout(Some(POLL)).expect("set the socket's read timeout");
        let addr = socket.local_addr().expect("the socket's address");
        let state = Arc::new(Mutex::new(State {
            zone,
            listed: HashMap::new(),
            ttl: DEFAULT_TTL,
            queries: HashMap::new(),
            total: 0,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("dnsbl".into())
            .spawn({
                let state = state.clone();
                let stop = stop.clone();
                move || serve(&socket, &state, &stop)
            })
            .expect("start the DNSBL thread");
        DnsBl { addr, state, stop, thread: Some(thread) }
    }

    /// The zone served, without the final dot.
    pub fn zone(&self) -> String {
        self.lock().zone.clone()
    }

    /// Lists `ip`, answering [`LISTED`] and no TXT record.
    pub fn list(&self, ip: IpAddr) {
        self.list_entry(&reversed(ip), LISTED, None);
    }

    /// Lists `ip` with the A record `code` and, if given, the TXT record `reason`.
    pub fn list_with(&self, ip: IpAddr, code: Ipv4Addr, reason: Option<&str>) {
        self.list_entry(&reversed(ip), code, reason);
    }

    /// Lists a domain name, as right-hand-side lists do (`spam.example` is asked for as
    /// `spam.example.<zone>`), answering [`LISTED`].
    pub fn list_name(&self, name: &str) {
        self.list_entry(name.trim_end_matches('.'), LISTED, None);
    }

    /// Removes `ip` from the list.
    pub fn unlist(&self, ip: IpAddr) {
        self.lock().listed.remove(&reversed(ip));
    }

    /// Sets the TTL of later answers, positive and negative (the SOA minimum).
    pub fn set_ttl(&self, ttl: u32) {
        self.lock().ttl = ttl;
    }

    /// How many queries the server has received, whatever they asked.
    pub fn queries(&self) -> u64 {
        self.lock().total
    }

    /// How many queries asked about `ip` in this zone (any record type).
    pub fn queries_for(&self, ip: IpAddr) -> u64 {
        let state = self.lock();
        let name = format!("{}.{}", reversed(ip), state.zone);
        state.queries.get(&name).copied().unwrap_or(0)
    }

    /// How many queries asked for exactly `name` (any case, with or without the final dot).
    pub fn queries_for_name(&self, name: &str) -> u64 {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.lock().queries.get(&name).copied().unwrap_or(0)
    }

    /// The name a client asks for to look `ip` up in this zone, without the final dot.
    pub fn name_for(&self, ip: IpAddr) -> String {
        format!("{}.{}", reversed(ip), self.lock().zone)
    }

    fn list_entry(&self, key: &str, code: Ipv4Addr, reason: Option<&str>) {
        let listing = Listing { code, reason: reason.map(str::to_owned) };
        self.lock().listed.insert(key.to_ascii_lowercase(), listing);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while the lock was held can only have come from a test's assertion; the state
        // itself is still whole.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for DnsBl {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The labels a DNSBL is asked for about `ip`, without the zone: the four octets of an IPv4
/// address in reverse order, or the 32 nibbles of an IPv6 address in reverse order.
pub fn reversed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(ip) => {
            let [a, b, c, d] = ip.octets();
            format!("{d}.{c}.{b}.{a}")
        }
        IpAddr::V6(ip) => {
            let nibbles: Vec<String> =
                ip.octets().iter().rev().flat_map(|byte| [byte & 0xf, byte >> 4]).map(|n| format!("{n:x}")).collect();
            nibbles.join(".")
        }
    }
}

/// The server thread: answers each datagram until the stop flag is set.
fn serve(socket: &UdpSocket, state: &Mutex<State>, stop: &AtomicBool) {
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        let (len, peer) = match socket.recv_from(&mut buf) {
            Ok(received) => received,
            // The read timeout: time to look at the stop flag again.
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(_) => continue,
        };
        let reply = {
            let mut state = state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            answer(&buf[..len], &mut state)
        };
        if let Some(reply) = reply {
            let _ = socket.send_to(&reply, peer);
        }
    }
}

/// A parsed question.
struct Question {
    /// The name asked for, in lower case, without the final dot.
    name: String,
    qtype: u16,
    qclass: u16,
    /// Where the question ends in the query.
    end: usize,
}

/// The reply to the query `query`, counting it; `None` for what deserves no reply (a datagram
/// too short to hold a header, or a response).
fn answer(query: &[u8], state: &mut State) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None;
    }
    let opcode = (query[2] >> 3) & 0x0f;
    if opcode != 0 {
        return Some(header_only(query, NOTIMP));
    }
    let qdcount = u16::from_be_bytes([query[4], query[5]]);
    let Some(question) = (qdcount == 1).then(|| parse_question(query)).flatten() else {
        return Some(header_only(query, FORMERR));
    };
    state.total += 1;
    *state.queries.entry(question.name.clone()).or_insert(0) += 1;

    let zone_suffix = format!(".{}", state.zone);
    let in_zone = question.name == state.zone || question.name.ends_with(&zone_suffix);
    if !in_zone || question.qclass != CLASS_IN {
        return Some(reply(query, &question, REFUSED, &[], None));
    }
    let key = question.name.strip_suffix(&zone_suffix).unwrap_or("");
    let soa = soa_record(&state.zone, state.ttl);
    let Some(listing) = state.listed.get(key) else {
        // The apex exists (it has the SOA); every other name not listed does not.
        let rcode = if key.is_empty() { NOERROR } else { NXDOMAIN };
        let answers = if key.is_empty() && question.qtype == TYPE_SOA { vec![soa.clone()] } else { vec![] };
        let authority = answers.is_empty().then_some(soa);
        return Some(reply(query, &question, rcode, &answers, authority));
    };
    let ttl = state.ttl;
    let answers: Vec<Vec<u8>> = match question.qtype {
        TYPE_A => vec![record(TYPE_A, ttl, &listing.code.octets())],
        TYPE_TXT => {
            listing.reason.as_deref().map(|reason| record(TYPE_TXT, ttl, &txt_data(reason))).into_iter().collect()
        }
        _ => vec![],
    };
    let authority = answers.is_empty().then_some(soa);
    Some(reply(query, &question, NOERROR, &answers, authority))
}

/// The question of a query with one question, if it is well formed.
fn parse_question(query: &[u8]) -> Option<Question> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*query.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        // Compression pointers (and the reserved label types) have no place in a question
        // sent by a stub resolver.
        if len > 63 {
            return None;
        }
        let label = query.get(at..at + len)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        at += len;
    }
    let fixed = query.get(at..at + 4)?;
    Some(Question {
        name: labels.join("."),
        qtype: u16::from_be_bytes([fixed[0], fixed[1]]),
        qclass: u16::from_be_bytes([fixed[2], fixed[3]]),
        end: at + 4,
    })
}

/// A reply with the query's id and no sections, for queries that cannot be answered at all.
fn header_only(query: &[u8], rcode: u8) -> Vec<u8> {
    let mut out = query[..12].to_vec();
    // QR, the query's opcode and RD; AA and RA clear.
    out[2] = 0x80 | (query[2] & 0x79);
    out[3] = rcode;
    out[4..12].fill(0);
    out
}

/// A reply that repeats the question, with `answers` and an optional authority record.
fn reply(query: &[u8], question: &Question, rcode: u8, answers: &[Vec<u8>], authority: Option<Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&query[..2]);
    // QR and AA, the query's opcode and RD; no recursion available.
    out.push(0x80 | 0x04 | (query[2] & 0x79));
    out.push(rcode);
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    out.extend_from_slice(&u16::from(authority.is_some()).to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    // The question as the client wrote it, case included (some resolvers randomise the case
    // and check that it comes back).
    out.extend_from_slice(&query[12..question.end]);
    for answer in answers {
        out.extend_from_slice(answer);
    }
    if let Some(authority) = authority {
        out.extend_from_slice(&authority);
    }
    out
}

/// A resource record for the name of the question (a pointer to offset 12).
fn record(rtype: u16, ttl: u32, data: &[u8]) -> Vec<u8> {
    let mut out = vec![0xc0, 0x0c];
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// The zone's SOA record, whose minimum (the TTL of negative answers) is `ttl`.
fn soa_record(zone: &str, ttl: u32) -> Vec<u8> {
    let owner = encode_name(zone).unwrap_or_else(|| vec![0]);
    let mut data = encode_name(&format!("ns.{zone}")).unwrap_or_else(|| vec![0]);
    data.extend(encode_name(&format!("hostmaster.{zone}")).unwrap_or_else(|| vec![0]));
    // Serial, refresh, retry, expire, minimum.
    for value in [1u32, 3600, 600, 86400, ttl] {
        data.extend_from_slice(&value.to_be_bytes());
    }
    let mut out = owner;
    out.extend_from_slice(&TYPE_SOA.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(&data);
    out
}

/// A TXT record's data: the text in character-strings of at most 255 bytes.
fn txt_data(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 1);
    for chunk in text.as_bytes().chunks(255) {
        out.push(chunk.len() as u8);
        out.extend_from_slice(chunk);
    }
    if out.is_empty() {
        out.push(0);
    }
    out
}

/// `name` in wire format, uncompressed; `None` when a label is empty or too long.
fn encode_name(name: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return None;
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    /// A query with id 0x1234, recursion desired, for `name` and `qtype`, built by hand.
    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend(encode_name(name).unwrap());
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&CLASS_IN.to_be_bytes());
        q
    }

    /// What a reply says: its code, and the data of each record of the answer section.
    #[derive(Debug, PartialEq)]
    struct Reply {
        id: u16,
        rcode: u8,
        answers: Vec<(u16, u32, Vec<u8>)>,
        authority: u16,
    }

    /// Reads a reply made by [`answer`]: answers always name the question by a pointer.
    fn parse(reply: &[u8]) -> Reply {
        assert_eq!(reply[2] & 0x80, 0x80, "not a response");
        let ancount = u16::from_be_bytes([reply[6], reply[7]]);
        let question = parse_question(reply).expect("the question is repeated");
        let mut at = question.end;
        let mut answers = Vec::new();
        for _ in 0..ancount {
            assert_eq!(&reply[at..at + 2], &[0xc0, 0x0c]);
            let rtype = u16::from_be_bytes([reply[at + 2], reply[at + 3]]);
            let ttl = u32::from_be_bytes(reply[at + 6..at + 10].try_into().unwrap());
            let len = usize::from(u16::from_be_bytes([reply[at + 10], reply[at + 11]]));
            answers.push((rtype, ttl, reply[at + 12..at + 12 + len].to_vec()));
            at += 12 + len;
        }
        Reply {
            id: u16::from_be_bytes([reply[0], reply[1]]),
            rcode: reply[3] & 0x0f,
            answers,
            authority: u16::from_be_bytes([reply[8], reply[9]]),
        }
    }

    fn state() -> State {
        State { zone: "bl.test".into(), listed: HashMap::new(), ttl: 60, queries: HashMap::new(), total: 0 }
    }

    #[test]
    fn addresses_are_reversed_as_dnsbls_ask_for_them() {
        assert_eq!(reversed("127.0.0.1".parse().unwrap()), "1.0.0.127");
        assert_eq!(reversed("192.0.2.99".parse().unwrap()), "99.2.0.192");
        let v6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert_eq!(reversed(v6.into()), "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2");
    }

    #[test]
    fn a_listed_address_is_127_0_0_2_and_others_do_not_exist() {
        let mut state = state();
        state.listed.insert("1.0.0.127".into(), Listing { code: LISTED, reason: Some("test listing".into()) });
        let listed = parse(&answer(&query("1.0.0.127.bl.test", TYPE_A), &mut state).unwrap());
        assert_eq!(listed.id, 0x1234);
        assert_eq!(listed.rcode, NOERROR);
        assert_eq!(listed.answers, vec![(TYPE_A, 60, vec![127, 0, 0, 2])]);
        // The name in another case is the same name, and TXT gives the reason.
        let txt = parse(&answer(&query("1.0.0.127.BL.Test", TYPE_TXT), &mut state).unwrap());
        assert_eq!(txt.answers, vec![(TYPE_TXT, 60, b"\x0ctest listing".to_vec())]);
        // Another type of a listed name: no data, with the SOA for negative caching.
        let aaaa = parse(&answer(&query("1.0.0.127.bl.test", 28), &mut state).unwrap());
        assert_eq!((aaaa.rcode, aaaa.answers.len(), aaaa.authority), (NOERROR, 0, 1));
        let unlisted = parse(&answer(&query("2.0.0.127.bl.test", TYPE_A), &mut state).unwrap());
        assert_eq!((unlisted.rcode, unlisted.answers.len(), unlisted.authority), (NXDOMAIN, 0, 1));
        let outside = parse(&answer(&query("1.0.0.127.other.test", TYPE_A), &mut state).unwrap());
        assert_eq!(outside.rcode, REFUSED);
        let apex = parse(&answer(&query("bl.test", TYPE_A), &mut state).unwrap());
        assert_eq!((apex.rcode, apex.authority), (NOERROR, 1));
        assert_eq!(state.total, 6);
        assert_eq!(state.queries["1.0.0.127.bl.test"], 3);
        assert_eq!(state.queries["2.0.0.127.bl.test"], 1);
    }

    #[test]
    fn malformed_queries_get_formerr_and_responses_get_nothing() {
        let mut state = state();
        assert_eq!(answer(&[0; 5], &mut state), None);
        let mut response = query("1.0.0.127.bl.test", TYPE_A);
        response[2] |= 0x80;
        assert_eq!(answer(&response, &mut state), None);
        let mut truncated = query("1.0.0.127.bl.test", TYPE_A);
        truncated.truncate(20);
        assert_eq!(answer(&truncated, &mut state).unwrap()[3], FORMERR);
        let mut two = query("1.0.0.127.bl.test", TYPE_A);
        two[5] = 2;
        assert_eq!(answer(&two, &mut state).unwrap()[3], FORMERR);
        let mut update = query("bl.test", TYPE_SOA);
        update[2] = 5 << 3;
        assert_eq!(answer(&update, &mut state).unwrap()[3], NOTIMP);
        assert_eq!(state.total, 0);
    }

    #[test]
    fn the_server_answers_over_udp_and_counts() {
        let server = DnsBl::start("bl.test.");
        assert_eq!(server.zone(), "bl.test");
        let listed: IpAddr = "192.0.2.1".parse().unwrap();
        server.list_with(listed, Ipv4Addr::new(127, 0, 0, 4), None);
        server.list_name("spam.example");
        let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let ask = |name: &str| {
            client.send_to(&query(name, TYPE_A), server.addr).unwrap();
            let mut buf = [0u8; 1500];
            let (len, _) = client.recv_from(&mut buf).unwrap();
            parse(&buf[..len])
        };
        assert_eq!(ask(&server.name_for(listed)).answers, vec![(TYPE_A, DEFAULT_TTL, vec![127, 0, 0, 4])]);
        assert_eq!(ask("spam.example.bl.test").answers[0].2, vec![127, 0, 0, 2]);
        server.unlist(listed);
        assert_eq!(ask(&server.name_for(listed)).rcode, NXDOMAIN);
        assert_eq!(server.queries_for(listed), 2);
        assert_eq!(server.queries_for_name("SPAM.example.bl.test."), 1);
        assert_eq!(server.queries(), 3);
    }
}
