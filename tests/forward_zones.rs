//! `[[forward]]` zones as an Active Directory site uses them: clients ask telesink, the
//! AD zones (`corp.example`, `_msdcs.corp.example`, SRV records, a reverse zone) go to
//! the domain controller (a knotd serving an AD-like, DNSSEC-signed zone), the rest to
//! the default upstream (a knotd whose root wildcard answers 203.0.113.1 for any name,
//! so "from the DC" and "from the default upstream" are told apart).

mod common;

use common::*;
use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

const CORP: &str = r#"$ORIGIN corp.example.
$TTL 300
@        SOA dc1.corp.example. hostmaster.corp.example. 1 3600 600 86400 120
@        NS  dc1
@        A   192.0.2.10
dc1      A   192.0.2.10
dc2      A   192.0.2.11
ws17     A   192.0.2.117
telemetry A  192.0.2.99
_ldap._tcp      SRV 0 100 389 dc1
_kerberos._tcp  SRV 0 100 88 dc1
"#;

const MSDCS: &str = r#"$ORIGIN _msdcs.corp.example.
$TTL 300
@        SOA dc1.corp.example. hostmaster.corp.example. 1 3600 600 86400 120
@        NS  dc1.corp.example.
_ldap._tcp.dc   SRV 0 100 389 dc1.corp.example.
_kerberos._tcp.dc SRV 0 100 88 dc1.corp.example.
"#;

const REVERSE: &str = r#"$ORIGIN 2.0.192.in-addr.arpa.
$TTL 300
@        SOA dc1.corp.example. hostmaster.corp.example. 1 3600 600 86400 120
@        NS  dc1.corp.example.
10       PTR dc1.corp.example.
117      PTR ws17.corp.example.
"#;

struct Site {
    _dc: Knot,
    _isp: Knot,
    ts: Telesink,
    metrics: std::net::SocketAddr,
}

/// telesink's config: the default upstream, the AD zones to the DC when `forward`, and
/// a profile whose list blocks all of `corp.example` by a suffix rule.
fn site_config(isp: &Knot, dc: &Knot, forward: bool) -> String {
    let zones = format!(
        "[[forward]]\nzone = \"corp.example\"\nservers = [\"{dc}\"]\n[[forward]]\nzone = \"2.0.192.in-addr.arpa\"\nservers = [\"{dc}\"]\n",
        dc = dc.addr
    );
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\nservers = [\"{isp}\"]\n{zones}[policy]\nlists_dir = \".\"\n[profiles.p]\nenabled = true\nlists = [\"block.list\"]\n",
        isp = isp.addr,
        zones = if forward { zones.as_str() } else { "" },
    )
}

/// The DC, the default upstream, and telesink with a profile whose list blocks all of
/// `corp.example` by a suffix rule and `telemetry.corp.example` by an exact one.
fn site() -> Option<Site> {
    if !require("knotd") {
        return None;
    }
    let dc = Knot::start_zones_signed(
        &[
            ("test", ZONE),
            ("corp.example", CORP),
            ("_msdcs.corp.example", MSDCS),
            ("2.0.192.in-addr.arpa", REVERSE),
        ],
        true,
    );
    let isp = Knot::start_zones(&[(".", ROOT_WILDCARD), ("test", ZONE)]);
    let config = site_config(&isp, &dc, true);
    let dir = TempDir::new("forward");
    dir.write(
        "block.list",
        "*.corp.example\ntelemetry.corp.example\n*.elsewhere.example\n",
    );
    let cfg = dir.write("telesink.toml", &config);
    let ts = Telesink::start_with(dir, &cfg, &["--metrics", "127.0.0.1:0"]);
    let metrics = ts.metrics_addr();
    Some(Site {
        _dc: dc,
        _isp: isp,
        ts,
        metrics,
    })
}

/// A reload that adds the AD zones puts them in force with the policy that reads them
/// (exact rules only), and one that takes them away sends the names back to the
/// default upstream under the suffix rule.
#[test]
fn forward_zones_come_and_go_with_a_reload() {
    let Some(site) = site() else { return };
    let ts = &site.ts;
    let cfg = ts.dir.path().join("telesink.toml");
    assert_eq!(
        addrs(&ts.q("dc1.corp.example", RecordType::A)),
        ["192.0.2.10"]
    );
    std::fs::write(&cfg, site_config(&site._isp, &site._dc, false)).unwrap();
    let (ok, out, err) = ts.ctl(&["reload"]);
    assert!(ok, "{out}{err}");
    // The reload's own reply says what only a restart applies (the log may lag behind).
    assert!(!out.contains("needs a restart"), "{out}");
    assert_eq!(addrs(&ts.q("dc2.corp.example", RecordType::A)), ["0.0.0.0"]);
    std::fs::write(&cfg, site_config(&site._isp, &site._dc, true)).unwrap();
    let (ok, out, err) = ts.ctl(&["reload"]);
    assert!(ok, "{out}{err}");
    assert!(!out.contains("needs a restart"), "{out}");
    assert_eq!(
        addrs(&ts.q("ws17.corp.example", RecordType::A)),
        ["192.0.2.117"]
    );
    assert!(!ts.log_text().contains("only a restart applies"));
}

fn srv_targets(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some(format!("{} {}", s.port, s.target)),
            _ => None,
        })
        .collect()
}

#[test]
fn active_directory_zones_go_to_the_domain_controllers() {
    let Some(site) = site() else { return };
    let ts = &site.ts;
    // A and SRV records of the AD zone, from the DC, although a list's suffix rule
    // covers the whole zone: forward zones are not subject to suffix rules.
    assert_eq!(
        addrs(&ts.q("dc1.corp.example", RecordType::A)),
        ["192.0.2.10"]
    );
    assert_eq!(addrs(&ts.q("corp.example", RecordType::A)), ["192.0.2.10"]);
    assert_eq!(
        srv_targets(&ts.q("_ldap._tcp.corp.example", RecordType::SRV)),
        ["389 dc1.corp.example."]
    );
    assert_eq!(
        srv_targets(&ts.q("_kerberos._tcp.dc._msdcs.corp.example", RecordType::SRV)),
        ["88 dc1.corp.example."]
    );
    // The reverse zone.
    let ptr = ts.q("117.2.0.192.in-addr.arpa", RecordType::PTR);
    assert!(
        ptr.answers
            .iter()
            .any(|r| matches!(&r.data, RData::PTR(p) if p.0.to_string() == "ws17.corp.example.")),
        "{ptr:?}"
    );
    // A name the DC does not have: its NXDOMAIN, with the DC's SOA.
    let missing = ts.q("nosuch.corp.example", RecordType::A);
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    assert!(soa_of(&missing).is_some_and(|s| s.name.to_string() == "corp.example."));
    // Everything else goes to the default upstream, and its suffix rules still block.
    assert_eq!(
        addrs(&ts.q("www.example.org", RecordType::A)),
        ["203.0.113.1"]
    );
    assert_eq!(
        addrs(&ts.q("x.elsewhere.example", RecordType::A)),
        ["0.0.0.0"]
    );
    // An exact rule still blocks a name inside the AD zone, per device.
    assert_eq!(
        addrs(&ts.q_from("127.0.0.5", "telemetry.corp.example", RecordType::A)),
        ["0.0.0.0"]
    );
    assert_eq!(
        addrs(&ts.q_from("127.0.0.6", "telemetry.corp.example", RecordType::A)),
        ["0.0.0.0"]
    );
    let (_, body) = get(site.metrics, "/metrics");
    for client in ["127.0.0.5", "127.0.0.6"] {
        assert_eq!(
            value(
                &body,
                &format!("telesink_dns_blocked_total{{client=\"{client}\",profile=\"p\"}}")
            ),
            Some(1.0),
            "each device is seen, not the DC: {body}"
        );
    }
    // explain says why a name the suffix rule covers is not blocked, and check agrees.
    let out = std::process::Command::new(bin())
        .args(["explain", "ws17.corp.example", "--config"])
        .arg(ts.dir.path().join("telesink.toml"))
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(
        text.contains("ws17.corp.example for client 127.0.0.1 (group default): forwarded")
            && text.contains("in [[forward]] zone corp.example: only exact rules block here"),
        "{text}"
    );
    // The DC's queries are counted as its own upstream.
    let dc = format!("{}", site._dc.addr);
    assert!(
        value(
            &body,
            &format!("telesink_upstream_queries_total{{transport=\"udp\",upstream=\"{dc}\"}}")
        )
        .is_some_and(|n| n >= 5.0),
        "{body}"
    );
}

/// DNSSEC-aware pass-through: a client that sets DO gets the DC's RRSIGs, one that
/// does not gets none, whichever asked first (they are cached apart).
#[test]
fn forward_zones_pass_dnssec_records_to_clients_that_ask() {
    let Some(site) = site() else { return };
    let ts = &site.ts;
    let plain = ts.q("dc2.corp.example", RecordType::A);
    assert_eq!(addrs(&plain), ["192.0.2.11"]);
    assert!(
        !plain
            .answers
            .iter()
            .any(|r| r.record_type() == RecordType::RRSIG)
    );
    let mut m = query_message("dc2.corp.example", RecordType::A, false);
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    edns.set_dnssec_ok(true);
    m.set_edns(edns);
    let reply = udp_raw(ts.udp, "127.0.0.1".parse().unwrap(), &m.to_vec().unwrap()).unwrap();
    let signed = Message::from_vec(&reply).unwrap();
    assert!(
        signed
            .answers
            .iter()
            .any(|r| r.record_type() == RecordType::RRSIG),
        "{signed:?}"
    );
    // AD is never set from a clear-text path.
    assert!(!signed.metadata.authentic_data);
    // And the plain answer is still plain after the signed one was cached.
    let again = ts.q("dc2.corp.example", RecordType::A);
    assert!(
        !again
            .answers
            .iter()
            .any(|r| r.record_type() == RecordType::RRSIG)
    );
}

/// The same refusals from `check` as from a start: a forward zone without servers, the
/// root as a forward zone, a zone listed twice.
#[test]
fn check_refuses_broken_forward_zones() {
    let dir = TempDir::new("forward-check");
    check_refuses(
        &dir,
        &[
        (
            "[[forward]]\nzone = \"corp.example\"\nservers = []\n",
            "has no servers",
        ),
        (
            "[[forward]]\nzone = \".\"\nservers = [\"192.0.2.1:53\"]\n",
            "root",
        ),
        (
            "[[forward]]\nzone = \"corp.example\"\nservers = [\"192.0.2.1:53\"]\n[[forward]]\nzone = \"Corp.Example.\"\nservers = [\"192.0.2.2:53\"]\n",
            "listed twice",
        ),
        (
            "[[forward]]\nzone = \"corp.example\"\nservers = [\"192.0.2.1\"]\n",
            "192.0.2.1:53",
        ),
    ].map(|(t, s)| (t.to_owned(), s)),
    );
    let cfg = dir.write(
        "telesink.toml",
        "[[forward]]\nzone = \"corp.example\"\nservers = [\"192.0.2.1:53\", \"192.0.2.2:53\"]\n",
    );
    let (ok, out) = check(&cfg);
    assert!(ok, "{out}");
}
