//! The resolver end to end: the real binary, a real knotd upstream, real UDP/TCP clients.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

const BLOCK: &str = "\
# office profile
nexus.officeapps.live.com   # exact
*.blocked.test              # suffix: the name and below
||ads.test^                 # adblock suffix
nexus.allowed.test          # exact block under a broad allow
tie.test
";
const ALLOW: &str = "ok.blocked.test\n*.allowed.test\ntie.test\n";

fn config(upstream: SocketAddr, extra_policy: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
[upstream]
servers = ["{upstream}"]
timeout_ms = 1000
[policy]
lists_dir = "."
allowlists = ["allow.list"]
allowed_clients = ["127.0.0.1/32", "127.0.0.2/32", "127.0.0.3/32"]
{extra_policy}

[profiles.office]
enabled = true
lists = ["block.list"]

[profiles.m-nx]
enabled = true
mode = "nxdomain"
lists = ["nx.list"]

[profiles.m-nodata]
enabled = true
mode = "nodata"
lists = ["nodata.list"]

[profiles.m-refused]
enabled = true
mode = "refused"
lists = ["refused.list"]

[profiles.m-ip]
enabled = true
mode = "ip"
ipv4 = "192.0.2.99"
ipv6 = "2001:db8::99"
lists = ["ip.list"]

[profiles.strict]
lists = ["strict.list"]

[[groups]]
name = "lab"
clients = ["127.0.0.2/32"]
enable = ["strict"]

[[groups]]
name = "quiet"
clients = ["127.0.0.3/32"]
disable = ["office"]
"#
    )
}

const FILES: &[(&str, &str)] = &[
    ("block.list", BLOCK),
    ("allow.list", ALLOW),
    ("nx.list", "nx.modes.test\n"),
    ("nodata.list", "nodata.modes.test\n"),
    ("refused.list", "refused.modes.test\n"),
    ("ip.list", "ip.modes.test\n"),
    ("strict.list", "shared.test\n"),
];

fn setup(extra_policy: &str) -> Option<(Knot, Telesink)> {
    if !require("knotd") {
        return None;
    }
    let big: String = (0..12)
        .map(|i| format!("big TXT \"{}\"\n", format!("{i:02}").repeat(100)))
        .collect();
    let knot = Knot::start(&big);
    let ts = Telesink::start(&config(knot.addr, extra_policy), FILES);
    Some((knot, ts))
}

fn assert_blocked_by(m: &Message, profile: &str) {
    let (code, text) = ede(m).unwrap_or_else(|| panic!("no EDE in {m:?}"));
    assert_eq!(code, 15, "EDE code must be 15 Blocked");
    assert!(
        text.contains(profile),
        "EDE text {text:?} should name {profile}"
    );
}

fn assert_soa_ttl(m: &Message, ttl: u32) {
    let soa = soa_of(m).unwrap_or_else(|| panic!("no SOA in authority: {m:?}"));
    let RData::SOA(data) = &soa.data else {
        panic!()
    };
    assert_eq!(data.minimum, ttl);
    assert_eq!(soa.ttl, ttl);
}

#[test]
fn every_mode_and_qtype() {
    let Some((_k, ts)) = setup("") else { return };
    let others = [
        RecordType::MX,
        RecordType::TXT,
        RecordType::HTTPS,
        RecordType::SVCB,
        RecordType::CNAME,
    ];
    // null: addresses for A/AAAA, NODATA with SOA for everything else.
    let a = ts.q("nexus.officeapps.live.com", RecordType::A);
    assert_eq!(addrs(&a), ["0.0.0.0"]);
    assert_eq!(a.answers[0].ttl, 60);
    assert_blocked_by(&a, "office");
    assert_eq!(
        addrs(&ts.q("nexus.officeapps.live.com", RecordType::AAAA)),
        ["::"]
    );
    for t in others {
        let m = ts.q("nexus.officeapps.live.com", t);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{t}");
        assert!(
            m.answers.is_empty(),
            "null mode must not answer {t} with data"
        );
        assert_soa_ttl(&m, 60);
        assert_blocked_by(&m, "office");
    }
    // ip: the configured addresses, NODATA otherwise.
    assert_eq!(addrs(&ts.q("ip.modes.test", RecordType::A)), ["192.0.2.99"]);
    assert_eq!(
        addrs(&ts.q("ip.modes.test", RecordType::AAAA)),
        ["2001:db8::99"]
    );
    for t in others {
        let m = ts.q("ip.modes.test", t);
        assert!(m.answers.is_empty() && soa_of(&m).is_some(), "{t}");
        assert_blocked_by(&m, "m-ip");
    }
    for t in [RecordType::A, RecordType::AAAA].into_iter().chain(others) {
        let m = ts.q("nx.modes.test", t);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{t}");
        assert_soa_ttl(&m, 60);
        assert_blocked_by(&m, "m-nx");
        let m = ts.q("nodata.modes.test", t);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{t}");
        assert!(m.answers.is_empty());
        assert_soa_ttl(&m, 60);
        assert_blocked_by(&m, "m-nodata");
        let m = ts.q("refused.modes.test", t);
        assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{t}");
        assert_blocked_by(&m, "m-refused");
    }
}

#[test]
fn precedence_most_specific_wins_and_allow_wins_ties() {
    let Some((_k, ts)) = setup("") else { return };
    // *.blocked.test covers the apex and everything below.
    assert_eq!(addrs(&ts.q("blocked.test", RecordType::A)), ["0.0.0.0"]);
    assert_eq!(addrs(&ts.q("a.b.blocked.test", RecordType::A)), ["0.0.0.0"]);
    assert_eq!(addrs(&ts.q("x.ads.test", RecordType::A)), ["0.0.0.0"]);
    // A label boundary, not a string suffix.
    let m = ts.q("notblocked.test", RecordType::A);
    assert!(ede(&m).is_none());
    // An exact allow beats the broader suffix block: forwarded (knotd says NXDOMAIN).
    let m = ts.q("ok.blocked.test", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(ede(&m).is_none());
    assert_eq!(soa_of(&m).unwrap().name.to_ascii(), "test.");
    // An exact block beats a broader suffix allow.
    assert_eq!(
        addrs(&ts.q("nexus.allowed.test", RecordType::A)),
        ["0.0.0.0"]
    );
    assert!(ede(&ts.q("other.allowed.test", RecordType::A)).is_none());
    // Same name, same specificity, allow and block: allow wins.
    assert!(ede(&ts.q("tie.test", RecordType::A)).is_none());
}

#[test]
fn client_groups_refusal_and_policy_before_cache() {
    let Some((_k, ts)) = setup("") else { return };
    // Default group: strict is off, so the answer is forwarded and now cached.
    assert_eq!(
        addrs(&ts.q_from("127.0.0.1", "shared.test", RecordType::A)),
        ["192.0.2.20"]
    );
    // The lab group has strict on: the warm cache must not leak the real answer.
    let m = ts.q_from("127.0.0.2", "shared.test", RecordType::A);
    assert_eq!(addrs(&m), ["0.0.0.0"]);
    assert_blocked_by(&m, "strict");
    assert_eq!(
        addrs(&ts.q_from("127.0.0.1", "shared.test", RecordType::A)),
        ["192.0.2.20"]
    );
    // The quiet group has office off: a name office blocks resolves for it.
    assert_eq!(
        addrs(&ts.q_from("127.0.0.3", "tracker.blocked.test", RecordType::A)),
        ["192.0.2.66"]
    );
    assert_eq!(
        addrs(&ts.q_from("127.0.0.1", "tracker.blocked.test", RecordType::A)),
        ["0.0.0.0"]
    );
    // Outside allowed_clients: REFUSED, for blocked and ordinary names alike.
    for name in ["www.test", "nexus.officeapps.live.com"] {
        let m = ts.q_from("127.0.0.9", name, RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        assert!(m.answers.is_empty());
        // RFC 8914 EDE 18 (Prohibited) says why.
        assert_eq!(ede(&m).map(|e| e.0), Some(18), "{m:?}");
    }
}

#[test]
fn forwarding_keeps_cname_chains_and_cloaking_blocks_them() {
    let Some((_k, ts)) = setup("") else { return };
    let m = ts.q("chain.test", RecordType::A);
    assert_eq!(m.answers.len(), 3, "CNAME chain kept: {m:?}");
    assert_eq!(addrs(&m), ["192.0.2.10"]);
    for name in ["cloak.test", "deep.test"] {
        let m = ts.q(name, RecordType::A);
        assert_eq!(addrs(&m), ["0.0.0.0"], "{name}");
        let (_, text) = ede(&m).unwrap();
        assert!(text.contains("CNAME tracker.blocked.test"), "{text}");
        // Cached now; the second answer is checked again.
        assert_eq!(addrs(&ts.q(name, RecordType::A)), ["0.0.0.0"]);
        // A client without the profile gets the real chain.
        assert_eq!(
            addrs(&ts.q_from("127.0.0.3", name, RecordType::A)),
            ["192.0.2.66"]
        );
    }
}

#[test]
fn cname_cloaking_can_be_turned_off() {
    let Some((_k, ts)) = setup("cname_cloaking = false") else {
        return;
    };
    assert_eq!(addrs(&ts.q("cloak.test", RecordType::A)), ["192.0.2.66"]);
}

#[test]
fn upstream_down_gives_servfail_in_time_and_blocks_still_answer() {
    if !require("knotd") {
        return;
    }
    let dead: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let ts = Telesink::start(&config(dead, ""), FILES);
    let started = Instant::now();
    let m = ts.q("www.test", RecordType::A);
    let took = started.elapsed();
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(ede(&m).map(|e| e.0), Some(22));
    assert!(
        took < Duration::from_millis(2000),
        "SERVFAIL took {took:?}, the bound is 2 s"
    );
    assert_eq!(
        addrs(&ts.q("nexus.officeapps.live.com", RecordType::A)),
        ["0.0.0.0"]
    );
}

#[test]
fn udp_truncates_and_tcp_carries_the_whole_answer() {
    let Some((_k, ts)) = setup("") else { return };
    let m = ts.q("big.test", RecordType::TXT);
    assert!(
        m.metadata.truncation,
        "a 2.4 kB answer must set TC over UDP with a 1232 buffer"
    );
    let no_edns = udp_query(
        ts.udp,
        "127.0.0.1".parse().unwrap(),
        "big.test",
        RecordType::TXT,
        false,
    )
    .unwrap();
    assert!(no_edns.metadata.truncation);
    assert!(
        no_edns.edns.is_none(),
        "no OPT in the answer to a query without OPT"
    );
    let full = tcp_query(ts.tcp, "big.test", RecordType::TXT);
    assert!(!full.metadata.truncation);
    assert_eq!(full.answers.len(), 12);
    // Blocked names over TCP too.
    assert_eq!(
        addrs(&tcp_query(
            ts.tcp,
            "nexus.officeapps.live.com",
            RecordType::A
        )),
        ["0.0.0.0"]
    );
}

#[test]
fn question_case_is_echoed_and_edns_is_answered() {
    let Some((_k, ts)) = setup("") else { return };
    let m = ts.q("WwW.TeSt.", RecordType::A);
    assert_eq!(m.queries[0].name().to_ascii(), "WwW.TeSt.");
    assert_eq!(addrs(&m), ["192.0.2.10"]);
    let edns = m.edns.expect("OPT echoed");
    assert_eq!(edns.version(), 0);
    assert!(edns.max_payload() <= 1232);
    let b = ts.q("NEXUS.officeapps.LIVE.com", RecordType::A);
    assert_eq!(b.queries[0].name().to_ascii(), "NEXUS.officeapps.LIVE.com.");
    assert_eq!(addrs(&b), ["0.0.0.0"]);
}

#[test]
fn special_use_names_keep_clients_off_doh() {
    let Some((_k, ts)) = setup("") else { return };
    let m = ts.q("use-application-dns.net", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(soa_of(&m).is_some());
    let m = ts.q("_dns.resolver.arpa", RecordType::SVCB);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert!(soa_of(&m).is_some());
}

/// A hand-made header: id 0x1234, given flags word, and section counts.
fn header(flags: u16, qd: u16, ar: u16) -> Vec<u8> {
    let mut h = vec![0x12, 0x34];
    h.extend_from_slice(&flags.to_be_bytes());
    for c in [qd, 0, 0, ar] {
        h.extend_from_slice(&c.to_be_bytes());
    }
    h
}

fn question(name: &str, qtype: u16) -> Vec<u8> {
    let mut q = Vec::new();
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

fn rcode_of(reply: &[u8]) -> u8 {
    reply[3] & 0x0f
}

#[test]
fn malformed_and_unsupported_queries_get_rfc_answers_and_the_server_keeps_going() {
    let Some((_k, mut ts)) = setup("") else {
        return;
    };
    let lo = "127.0.0.1".parse().unwrap();
    // Two questions: FORMERR.
    let mut p = header(0x0100, 2, 0);
    p.extend(question("www.test", 1));
    p.extend(question("www.test", 1));
    assert_eq!(rcode_of(&udp_raw(ts.udp, lo, &p).unwrap()), 1);
    // No question: FORMERR.
    assert_eq!(
        rcode_of(&udp_raw(ts.udp, lo, &header(0x0100, 0, 0)).unwrap()),
        1
    );
    // Opcode STATUS (2): NOTIMP.
    let mut p = header(0x1100, 1, 0);
    p.extend(question("www.test", 1));
    assert_eq!(rcode_of(&udp_raw(ts.udp, lo, &p).unwrap()), 4);
    // EDNS version 1: BADVERS (16 = extended rcode 1 in the OPT TTL, header rcode 0).
    let mut p = header(0x0100, 1, 1);
    p.extend(question("www.test", 1));
    p.extend([0, 0, 41, 0x04, 0xd0, 0, 1, 0, 0, 0, 0]);
    let reply = udp_raw(ts.udp, lo, &p).unwrap();
    let m = Message::from_vec(&reply).unwrap();
    // 16 is both BADVERS and BADSIG; hickory names it BADSIG when decoding.
    assert_eq!(u16::from(m.metadata.response_code), 16);
    assert_eq!(m.edns.as_ref().map(|e| e.version()), Some(0));
    // Question claims more bytes than the packet has: FORMERR, not a crash.
    let mut p = header(0x0100, 1, 0);
    p.extend([20, b'w', b'w']);
    assert_eq!(rcode_of(&udp_raw(ts.udp, lo, &p).unwrap()), 1);
    // Deterministic garbage (xorshift), some of it shaped like headers.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..500 {
        let len = 1 + (i * 7) % 300;
        let pkt: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        sock.send_to(&pkt, ts.udp).unwrap();
    }
    // Zone transfer and CHAOS class: refused.
    let mut p = header(0x0100, 1, 0);
    p.extend(question("test", 252));
    assert_eq!(rcode_of(&udp_raw(ts.udp, lo, &p).unwrap()), 5);
    // Still serving, both kinds of answer.
    assert!(ts.is_running());
    assert_eq!(addrs(&ts.q("www.test", RecordType::A)), ["192.0.2.10"]);
    assert_eq!(
        addrs(&ts.q("nexus.officeapps.live.com", RecordType::A)),
        ["0.0.0.0"]
    );
}

#[test]
fn dig_sees_the_block_with_its_ede() {
    let Some((_k, ts)) = setup("") else { return };
    if !require("dig") {
        return;
    }
    let out = std::process::Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &ts.udp.port().to_string(),
            "nexus.officeapps.live.com",
            "A",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("status: NOERROR"), "{text}");
    assert!(text.contains("EDE: 15 (Blocked)"), "{text}");
    assert!(text.contains("0.0.0.0"), "{text}");
    // dig retries a truncated answer over TCP by itself and gets all 12 records.
    let out = std::process::Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &ts.udp.port().to_string(),
            "big.test",
            "TXT",
            "+noall",
            "+answer",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().filter(|l| l.contains("TXT")).count(),
        12,
        "{text}"
    );
}

#[test]
fn sighup_reloads_lists_and_a_broken_reload_keeps_the_old_policy() {
    let Some((_k, ts)) = setup("") else { return };
    assert_eq!(addrs(&ts.q("www.test", RecordType::A)), ["192.0.2.10"]);
    ts.dir.write("block.list", &format!("{BLOCK}www.test\n"));
    ts.signal("HUP");
    assert!(
        ts.wait_log("generation=2", Duration::from_secs(10)),
        "no reload logged"
    );
    assert!(ts.wait_log("reloaded", Duration::from_secs(5)));
    assert_eq!(addrs(&ts.q("www.test", RecordType::A)), ["0.0.0.0"]);
    // A config that does not parse: the reload fails and generation 2 keeps serving.
    let cfg = ts.dir.path().join("telesink.toml");
    let good = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{good}\n[bogus\n")).unwrap();
    ts.signal("HUP");
    assert!(ts.wait_log("reload failed", Duration::from_secs(10)));
    assert_eq!(addrs(&ts.q("www.test", RecordType::A)), ["0.0.0.0"]);
    assert_eq!(
        addrs(&ts.q("nexus.officeapps.live.com", RecordType::A)),
        ["0.0.0.0"]
    );
}

#[test]
fn ipv6_and_several_listeners() {
    if !require("knotd") {
        return;
    }
    let knot = Knot::start("");
    let cfg = config(knot.addr, "").replace(
        "listen = [\"127.0.0.1:0\"]",
        "listen = [\"127.0.0.1:0\", \"[::1]:0\"]",
    );
    let cfg = cfg.replace("allowed_clients = [", "allowed_clients = [\"::1/128\", ");
    let ts = Telesink::start(&cfg, FILES);
    let log = ts.log_text();
    let v6: std::net::SocketAddr = log
        .lines()
        .find_map(|l| {
            l.split("listening on udp ")
                .nth(1)
                .filter(|a| a.starts_with('['))?
                .trim()
                .parse()
                .ok()
        })
        .expect("an IPv6 UDP listener");
    let m = udp_query(
        v6,
        "::1".parse().unwrap(),
        "www.test",
        RecordType::AAAA,
        true,
    )
    .unwrap();
    assert_eq!(addrs(&m), ["2001:db8::10"]);
    let m = udp_query(
        v6,
        "::1".parse().unwrap(),
        "nexus.officeapps.live.com",
        RecordType::AAAA,
        true,
    )
    .unwrap();
    assert_eq!(addrs(&m), ["::"]);
    let mx = ts.q("www.test", RecordType::MX);
    assert!(
        matches!(&mx.answers[0].data, RData::MX(m) if m.exchange.to_ascii() == "mail.test."),
        "{mx:?}"
    );
}

#[test]
fn a_profile_allowlist_exempts_names_from_that_profile_only() {
    if !require("knotd") {
        return;
    }
    let knot = Knot::start("");
    // Both profiles block *.blocked.test; only "office" exempts tracker.blocked.test.
    let cfg = config(knot.addr, "")
        .replace(
            "lists = [\"block.list\"]",
            "lists = [\"block.list\"]\nallowlists = [\"office-allow.list\"]",
        )
        .replace(
            "[profiles.strict]\nlists = [\"strict.list\"]",
            "[profiles.strict]\nlists = [\"strict.list\", \"block.list\"]",
        );
    let mut files = FILES.to_vec();
    files.push(("office-allow.list", "tracker.blocked.test\n"));
    let ts = Telesink::start(&cfg, &files);
    // Default group: only office is on, and it exempts the name.
    assert_eq!(
        addrs(&ts.q_from("127.0.0.1", "tracker.blocked.test", RecordType::A)),
        ["192.0.2.66"]
    );
    // Lab group: strict is on too, and its own rule still blocks.
    let m = ts.q_from("127.0.0.2", "tracker.blocked.test", RecordType::A);
    assert_eq!(addrs(&m), ["0.0.0.0"]);
    assert_blocked_by(&m, "strict");
    // The exemption is exact: its neighbours stay blocked by office.
    assert_eq!(
        addrs(&ts.q_from("127.0.0.1", "other.blocked.test", RecordType::A)),
        ["0.0.0.0"]
    );
}

#[test]
fn queries_beyond_max_in_flight_are_shed_at_once_not_queued() {
    if !require("knotd") {
        return;
    }
    // An upstream that swallows queries: every forwarded query waits out the timeout.
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let cfg = config(sink.local_addr().unwrap(), "")
        .replace("[server]\n", "[server]\nmax_in_flight = 2\n");
    let ts = Telesink::start(&cfg, FILES);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for i in 0..10 {
        let q = query_message(&format!("n{i}.test"), RecordType::A, true);
        sock.send_to(&q.to_vec().unwrap(), ts.udp).unwrap();
    }
    let (mut shed, mut timed_out) = (0, 0);
    let mut buf = [0u8; 4096];
    for _ in 0..10 {
        let (n, _) = sock.recv_from(&mut buf).expect("every query is answered");
        let m = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        match ede(&m) {
            Some((0, text)) if text.starts_with("overloaded") => shed += 1,
            Some((22, _)) => timed_out += 1,
            other => panic!("unexpected EDE {other:?}"),
        }
    }
    assert_eq!((shed, timed_out), (8, 2));
    // Blocked names never need a slot.
    assert_eq!(
        addrs(&ts.q("nexus.officeapps.live.com", RecordType::A)),
        ["0.0.0.0"]
    );
}

#[test]
fn reloads_under_a_steady_query_stream_lose_no_query() {
    let Some((_k, ts)) = setup("") else { return };
    let udp = ts.udp;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let client = std::thread::spawn(move || {
        let (mut ok, mut failed) = (0u32, Vec::new());
        let lo = "127.0.0.1".parse().unwrap();
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            for name in ["www.test", "nexus.officeapps.live.com"] {
                match udp_query(udp, lo, name, RecordType::A, true) {
                    Ok(m) if !m.answers.is_empty() => ok += 1,
                    other => failed.push(format!("{name}: {other:?}")),
                }
            }
        }
        (ok, failed)
    });
    for generation in 2..=6 {
        ts.signal("HUP");
        assert!(ts.wait_log(&format!("generation={generation}"), Duration::from_secs(10)));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = client.join().unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} queries failed: {:?}",
        failed.len(),
        ok as usize + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 20, "only {ok} queries were made");
}

/// journald restarting (or a closed pipe) breaks the log stream: the resolver keeps
/// answering and reloading instead of panicking on its next log line.
#[test]
fn a_broken_log_stream_does_not_stop_the_resolver() {
    if !require("knotd") {
        return;
    }
    let knot = Knot::start("");
    let dir = TempDir::new("logpipe");
    for (name, text) in FILES {
        dir.write(name, text);
    }
    let cfg = dir.write("telesink.toml", &config(knot.addr, ""));
    let mut child = spawn_with_piped_log(std::process::Command::new(bin()), &cfg, &dir);
    let mut udp = None;
    {
        use std::io::BufRead;
        let stderr = child.stderr.take().unwrap();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(a) = line.split("listening on udp ").nth(1) {
                udp = a.trim().parse::<SocketAddr>().ok();
            }
            if line.ends_with("ready") {
                break;
            }
        }
        // The read end closes here: every later log line fails with EPIPE.
    }
    let udp = udp.expect("udp port");
    let pid = child.id().to_string();
    // Each reload is waited for on what the daemon reports (its reload count over the
    // control socket), not on a sleep: with the log pipe closed nothing else tells.
    let reloads_ok = || -> u64 {
        let out = std::process::Command::new(bin())
            .args(["status", "--json", "--socket"])
            .arg(dir.path().join("control.sock"))
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v["reloads_ok"].as_u64())
            .unwrap_or(0)
    };
    for n in 1..=3 {
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap();
        assert!(ok.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while reloads_ok() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "reload {n} did not complete"
            );
            assert!(matches!(child.try_wait(), Ok(None)), "telesink exited");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let m = udp_query(
        udp,
        "127.0.0.1".parse().unwrap(),
        "nexus.officeapps.live.com",
        RecordType::A,
        true,
    )
    .expect("still answering");
    assert_eq!(addrs(&m), ["0.0.0.0"]);
    assert!(matches!(child.try_wait(), Ok(None)), "telesink exited");
    let _ = child.kill();
    let _ = child.wait();
}

const HOLD_40000_THEN_EXEC: &str = "import os, socket, sys
s = socket.socket()
s.bind(('127.0.0.1', 40000))
s.listen()
s.set_inheritable(True)
os.execv(sys.argv[1], sys.argv[1:])";

/// With port 0 the kernel picks the UDP port, and that port may be taken for TCP (any
/// TCP socket, even an outgoing connection): start must pick again, not fail. In a
/// throwaway namespace whose ephemeral range is two ports with a TCP listener on one,
/// each start has an even chance of meeting the taken port first, so without the retry
/// one of six starts fails 63 times in 64.
#[test]
fn port_0_picks_again_when_tcp_cannot_have_the_port_udp_got() {
    if !common::netns::require_root() {
        return;
    }
    let dir = TempDir::new("port0");
    for (name, text) in FILES {
        dir.write(name, text);
    }
    let cfg = dir.write("telesink.toml", &config("127.0.0.1:9".parse().unwrap(), ""));
    for start in 0..6 {
        // sh, python and telesink exec in turn: one PID to end. Python hands its
        // listening socket on to telesink, so the port stays taken for TCP.
        let mut namespace = std::process::Command::new("unshare");
        namespace
            .args(["-n", "sh", "-c"])
            .arg(
                "ip link set lo up && sysctl -qw net.ipv4.ip_local_port_range='40000 40001' && exec python3 -c \"$0\" \"$@\"",
            )
            .args([HOLD_40000_THEN_EXEC, bin()]);
        let mut child = spawn_with_piped_log(namespace, &cfg, &dir);
        let mut log = String::new();
        let mut up = false;
        for line in std::io::BufRead::lines(std::io::BufReader::new(child.stderr.take().unwrap()))
            .map_while(Result::ok)
        {
            log += &line;
            log.push('\n');
            if line.ends_with("ready") {
                up = true;
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(up, "start {start} failed:\n{log}");
        assert!(
            log.contains("listening on udp 127.0.0.1:40001")
                && log.contains("listening on tcp 127.0.0.1:40001"),
            "start {start}: UDP and TCP must share the one free port:\n{log}"
        );
    }
}

/// telesink with its log on a pipe the test reads (and may close) itself; `command` is
/// the binary, or what execs it.
fn spawn_with_piped_log(
    mut command: std::process::Command,
    cfg: &std::path::Path,
    dir: &TempDir,
) -> std::process::Child {
    command
        .args(["run", "--config"])
        .arg(cfg)
        .env("RUNTIME_DIRECTORY", dir.path())
        .env("STATE_DIRECTORY", dir.path())
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// SIGHUP's default action ends a process. A reload sent as soon as telesink says
/// anything (systemd's `reload` right after start, a script reacting to the log) must
/// find the handlers in place, so they are installed before the first log line.
#[test]
fn signal_handlers_are_in_place_before_the_first_log_line() {
    let dir = TempDir::new("early-signals");
    for (name, text) in FILES {
        dir.write(name, text);
    }
    // Nothing listens on the discard port: start does not need a working upstream.
    let cfg = dir.write("telesink.toml", &config("127.0.0.1:9".parse().unwrap(), ""));
    let mut child = spawn_with_piped_log(std::process::Command::new(bin()), &cfg, &dir);
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut first).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let caught = status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .expect("SigCgt in /proc/<pid>/status");
    for (name, signo) in [("SIGHUP", 1), ("SIGINT", 2), ("SIGTERM", 15)] {
        assert!(
            caught & (1 << (signo - 1)) != 0,
            "{name} not caught when telesink logged its first line: {first}"
        );
    }
}

/// The UDP fast path replays answers; it must replay exactly what the full hickory-server
/// path sends. Two daemons on one config, one with `udp_fast_path = false`: every request
/// below is sent to both, three times to the fast one (the first fills, the rest replay),
/// and the answers must be equal byte for byte except the ID.
#[test]
fn fast_path_answers_match_the_hickory_path_byte_for_byte() {
    if !require("knotd") {
        return;
    }
    let big: String = (0..12)
        .map(|i| format!("big TXT \"{}\"\n", format!("{i:02}").repeat(100)))
        .collect();
    let knot = Knot::start(&big);
    let cfg = config(knot.addr, "");
    let slow_cfg = cfg.replacen(
        "listen = [\"127.0.0.1:0\"]",
        "listen = [\"127.0.0.1:0\"]\nudp_fast_path = false",
        1,
    );
    assert_ne!(cfg, slow_cfg);
    let fast = Telesink::start(&cfg, FILES);
    let slow = Telesink::start(&slow_cfg, FILES);

    let q = |name: &str, qtype: RecordType, edns: bool| {
        query_message(name, qtype, edns).to_vec().unwrap()
    };
    let mut small = query_message("big.test", RecordType::TXT, true);
    if let Some(e) = small.edns.as_mut() {
        e.set_max_payload(512);
    }
    let mut requests: Vec<(&str, Vec<u8>)> = vec![
        (
            "127.0.0.1",
            q("nexus.officeapps.live.com", RecordType::A, true),
        ),
        (
            "127.0.0.1",
            q("nexus.officeapps.live.com", RecordType::AAAA, false),
        ),
        (
            "127.0.0.1",
            q("nexus.officeapps.live.com", RecordType::MX, true),
        ),
        ("127.0.0.1", q("a.b.blocked.test", RecordType::A, true)),
        (
            "127.0.0.1",
            q("NeXuS.OfficeApps.Live.com", RecordType::A, true),
        ),
        ("127.0.0.1", q("nx.modes.test", RecordType::A, true)),
        ("127.0.0.1", q("nodata.modes.test", RecordType::A, true)),
        ("127.0.0.1", q("refused.modes.test", RecordType::A, true)),
        ("127.0.0.1", q("ip.modes.test", RecordType::AAAA, true)),
        ("127.0.0.2", q("shared.test", RecordType::A, true)),
        (
            "127.0.0.3",
            q("nexus.officeapps.live.com", RecordType::A, true),
        ),
        (
            "127.0.0.1",
            q("use-application-dns.net", RecordType::A, true),
        ),
        ("127.0.0.1", q("www.test", RecordType::A, true)),
        ("127.0.0.1", q("www.test", RecordType::A, false)),
        ("127.0.0.1", q("chain.test", RecordType::A, true)),
        ("127.0.0.1", q("deep.test", RecordType::A, true)),
        ("127.0.0.1", q("nodata.test", RecordType::A, true)),
        ("127.0.0.1", q("missing.test", RecordType::A, true)),
        ("127.0.0.1", q("big.test", RecordType::TXT, false)),
        ("127.0.0.1", small.to_vec().unwrap()),
        ("127.0.0.9", q("www.test", RecordType::A, true)),
    ];
    // Not queries a resolver answers normally: FORMERR, NOTIMP, REFUSED (class CH).
    let mut two = query_message("www.test", RecordType::A, false);
    two.add_query(hickory_proto::op::Query::query(
        hickory_proto::rr::Name::from_ascii("x.test").unwrap(),
        RecordType::A,
    ));
    requests.push(("127.0.0.1", two.to_vec().unwrap()));
    let mut notify = q("www.test", RecordType::SOA, false);
    notify[2] = (notify[2] & 0x87) | (4 << 3);
    requests.push(("127.0.0.1", notify));
    let mut chaos = q("version.bind", RecordType::TXT, false);
    let n = chaos.len();
    chaos[n - 1] = 3;
    requests.push(("127.0.0.1", chaos));
    let mut garbage = q("www.test", RecordType::A, false);
    garbage.truncate(15);
    requests.push(("127.0.0.1", garbage));

    // Warm both caches the same way first.
    for (from, packet) in &requests {
        let from = from.parse().unwrap();
        let _ = udp_raw(slow.udp, from, packet);
        let _ = udp_raw(fast.udp, from, packet);
    }
    for (from, packet) in &requests {
        let from = from.parse().unwrap();
        // A cached answer's TTLs count down by the second; retry when the two daemons'
        // ages straddle a second boundary.
        let mut last = None;
        for attempt in 0..3u16 {
            let want = udp_raw(slow.udp, from, packet).expect("full path answer");
            // A new ID for every send: a replay must carry the asker's ID, not the first's.
            let got: Vec<(u16, Vec<u8>)> = (0..3u16)
                .map(|i| {
                    let id = 0x4000 + attempt * 16 + i;
                    let mut p = packet.clone();
                    p[..2].copy_from_slice(&id.to_be_bytes());
                    (id, udp_raw(fast.udp, from, &p).expect("fast path answer"))
                })
                .collect();
            let fine = |(id, g): &(u16, Vec<u8>)| {
                g.len() >= 2 && g[2..] == want[2..] && g[..2] == id.to_be_bytes()
            };
            if want.len() >= 2 && got.iter().all(fine) {
                last = None;
                break;
            }
            last = Some((want, got));
        }
        if let Some((want, got)) = last {
            panic!("{from}: request {packet:02x?}\nfull path {want:02x?}\nfast path {got:02x?}");
        }
    }
    let log = fast.log_text();
    assert!(!log.contains("could not"), "{log}");
}

/// A CNAME target that a block rule matches used to override an explicit allow rule for
/// the queried name. The allow rule for the queried name decides now; cloaking still
/// catches names that no allow rule covers.
#[test]
fn cname_cloaking_respects_the_allow_rule_of_the_queried_name() {
    if !require("knotd") {
        return;
    }
    let knot = Knot::start("save.allowed CNAME tracker.blocked.test.\n");
    let ts = Telesink::start(&config(knot.addr, ""), FILES);
    let m = ts.q("save.allowed.test", RecordType::A);
    assert_eq!(
        addrs(&m),
        ["192.0.2.66"],
        "allowed by *.allowed.test: {m:?}"
    );
    assert!(ede(&m).is_none(), "{m:?}");
    // Cached now, and still allowed.
    assert_eq!(
        addrs(&ts.q("save.allowed.test", RecordType::A)),
        ["192.0.2.66"]
    );
    // No allow rule for cloak.test: cloaking still blocks it.
    assert_eq!(addrs(&ts.q("cloak.test", RecordType::A)), ["0.0.0.0"]);
}

/// The first answer to a blocked name is made from the request's bytes (src/dns/direct.rs),
/// not through hickory-server's message types; it must be the answer the full path sends,
/// byte for byte. Every request below is new to the fast daemon (its first answer) and is
/// sent once to a daemon with `udp_fast_path = false`; the fast daemon's metrics must show
/// the direct path answered the plain ones, so the comparison is of that path.
#[test]
fn first_answers_to_blocked_names_match_the_hickory_path_byte_for_byte() {
    if !require("knotd") {
        return;
    }
    let knot = Knot::start("");
    let cfg = config(knot.addr, "");
    let slow_cfg = cfg.replacen(
        "listen = [\"127.0.0.1:0\"]",
        "listen = [\"127.0.0.1:0\"]\nudp_fast_path = false",
        1,
    );
    let dir = TempDir::new("direct");
    for (name, text) in FILES {
        dir.write(name, text);
    }
    let fast_cfg = dir.write("telesink.toml", &cfg);
    let fast = Telesink::start_with(dir, &fast_cfg, &["--metrics", "127.0.0.1:0"]);
    let slow = Telesink::start(&slow_cfg, FILES);
    let metrics: SocketAddr = fast
        .log
        .lock()
        .unwrap()
        .lines()
        .find_map(|l| l.split("metrics listening on ").nth(1)?.trim().parse().ok())
        .expect("metrics address in the log");

    // EDNS variants: none, 1232, 512 with DO, 65000 (over our limit), 100 (under 512),
    // a cookie option (taken), client subnet (left to the full path).
    let opt = |payload: u16, flags: u16, options: &[u8]| {
        let mut o = vec![0, 0, 41];
        o.extend_from_slice(&payload.to_be_bytes());
        o.extend_from_slice(&[0, 0]);
        o.extend_from_slice(&flags.to_be_bytes());
        o.extend_from_slice(&(options.len() as u16).to_be_bytes());
        o.extend_from_slice(options);
        o
    };
    let cookie = [0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8];
    let subnet = [0, 8, 0, 7, 0, 1, 24, 0, 192, 0, 2];
    let edns: Vec<Option<Vec<u8>>> = vec![
        None,
        Some(opt(1232, 0, &[])),
        Some(opt(512, 0x8000, &[])),
        Some(opt(65000, 0, &[])),
        Some(opt(100, 0, &[])),
        Some(opt(1232, 0, &cookie)),
        Some(opt(1232, 0, &subnet)),
    ];
    let request = |name: &str, qtype: u16, flags: [u8; 2], edns: &Option<Vec<u8>>| {
        let mut p = vec![0x51, 0x7e, flags[0], flags[1], 0, 1, 0, 0, 0, 0, 0];
        p.push(u8::from(edns.is_some()));
        for l in name.split('.') {
            p.push(l.len() as u8);
            p.extend_from_slice(l.as_bytes());
        }
        p.push(0);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&[0, 1]);
        if let Some(o) = edns {
            p.extend_from_slice(o);
        }
        p
    };
    // Names of every mode, exact and suffix rules, mixed case, a long name whose SOA
    // owner is a suffix of it, groups (127.0.0.2 has `strict`).
    let long = format!(
        "{}.x.blocked.test",
        ["a".repeat(63), "b".repeat(63)].join(".")
    );
    let names: Vec<(&str, String)> = vec![
        ("127.0.0.1", "nexus.officeapps.live.com".into()),
        ("127.0.0.1", "NeXuS.OfficeApps.LIVE.com".into()),
        ("127.0.0.1", "a.b.blocked.test".into()),
        ("127.0.0.1", "Deep.Er.Blocked.Test".into()),
        ("127.0.0.1", "blocked.test".into()),
        ("127.0.0.1", "x.ads.test".into()),
        ("127.0.0.1", "nx.modes.test".into()),
        ("127.0.0.1", "nodata.modes.test".into()),
        ("127.0.0.1", "refused.modes.test".into()),
        ("127.0.0.1", "ip.modes.test".into()),
        ("127.0.0.2", "shared.test".into()),
        ("127.0.0.1", long),
    ];
    // A, AAAA, MX, TXT, HTTPS, ANY.
    let types = [1u16, 28, 15, 16, 65, 255];
    // RD on, RD off, RD and CD.
    let flags = [[0x01, 0x00], [0x00, 0x00], [0x01, 0x10]];
    let mut compared = 0;
    for (from, name) in &names {
        for qtype in types {
            for (e, edns) in edns.iter().enumerate() {
                // Every EDNS variant with A; the rest with the plain 1232 one.
                if qtype != 1 && e != 1 {
                    continue;
                }
                for f in &flags {
                    let packet = request(name, qtype, *f, edns);
                    let from = from.parse().unwrap();
                    let want = udp_raw(slow.udp, from, &packet).expect("full path answer");
                    let got = udp_raw(fast.udp, from, &packet).expect("first answer");
                    assert_eq!(
                        got, want,
                        "{name} type {qtype} flags {f:?} edns {edns:?}: first answer differs from the full path's"
                    );
                    compared += 1;
                }
            }
        }
    }
    let (_, body) = get(metrics, "/metrics");
    let direct = value(&body, "telesink_dns_answer_path_total{path=\"direct\"}").unwrap_or(0.0);
    let replay = value(&body, "telesink_dns_answer_path_total{path=\"replay\"}").unwrap_or(0.0);
    // The subnet requests (3 flags x 12 names) and the names over 512 bytes go the full
    // path; every other one was the direct path's.
    assert!(
        direct as usize >= compared - 3 * names.len() - 2 * flags.len() * 2,
        "only {direct} of {compared} first answers were made by the direct path:\n{body}"
    );
    assert_eq!(replay, 0.0, "every request was new: nothing to replay");
}
