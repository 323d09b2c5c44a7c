//! Encrypted upstreams against real servers: unbound as a DNS-over-TLS and DNS-over-HTTPS
//! server (a test CA made here, forwarding to knotd), and a DoT server of our own that
//! answers out of order, stalls, hangs up, shows an expired certificate or claims AD.
//! Every failure ends as the policy says (SERVFAIL with EDE 22/23 under `strict`) and is
//! counted by kind; `tests/encrypted_cleartext.rs` shows that nothing goes out in clear
//! text meanwhile.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::tls::{Behaviour, Fixture, Issued, Pki, SERVER_NAME, Unbound};
use common::*;
use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::RecordType;

/// telesink forwarding to `servers` (TOML array items) with `extra` in [upstream],
/// trusting the test CA; its metrics address.
fn telesink(pki: &Pki, servers: &[String], extra: &str) -> (Telesink, SocketAddr) {
    let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    let config = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\nservers = [{}]\nca_file = \"{}\"\n{extra}\n[cache]\nsize = 0\n",
        list.join(", "),
        pki.ca_file.display()
    );
    let dir = TempDir::new("enc");
    let cfg = dir.write("telesink.toml", &config);
    let ts = Telesink::start_with(dir, &cfg, &["--metrics", "127.0.0.1:0"]);
    let metrics = ts.metrics_addr();
    (ts, metrics)
}

fn series(kind: &str, upstream: &str, transport: &str) -> String {
    format!("{kind}{{transport=\"{transport}\",upstream=\"{upstream}\"}}")
}

fn errors(body: &str, upstream: &str, transport: &str, kind: &str) -> f64 {
    value(
        body,
        &format!(
            "telesink_upstream_errors_total{{kind=\"{kind}\",transport=\"{transport}\",upstream=\"{upstream}\"}}"
        ),
    )
    .unwrap_or(0.0)
}

fn servers_up() -> Option<(Pki, Issued, Knot, Unbound)> {
    if !require("knotd") || !require("unbound") {
        return None;
    }
    let pki = Pki::new();
    let good = pki.issue("good", SERVER_NAME, false);
    let knot = Knot::start("");
    let unbound = Unbound::start(&good, knot.addr);
    Some((pki, good, knot, unbound))
}

#[test]
fn answers_come_over_tls_and_https_on_reused_connections() {
    let Some((pki, _good, _knot, unbound)) = servers_up() else {
        return;
    };
    let dot = format!("tls://{}#{SERVER_NAME}", unbound.tls);
    let doh_post = format!("https://{}/dns-query#{SERVER_NAME}", unbound.https);
    for (upstream, transport, extra) in [
        (&dot, "tls", ""),
        (&doh_post, "https", ""),
        (&doh_post, "https", "doh_method = \"get\""),
    ] {
        let (ts, metrics) = telesink(&pki, std::slice::from_ref(upstream), extra);
        for i in 0..10 {
            let m = ts.q(
                "www.test",
                if i % 2 == 0 {
                    RecordType::A
                } else {
                    RecordType::AAAA
                },
            );
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::NoError,
                "{upstream} {extra}"
            );
            assert!(!addrs(&m).is_empty(), "{upstream}: {m:?}");
        }
        let nx = ts.q("nosuch.test", RecordType::A);
        assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
        let (_, body) = get(metrics, "/metrics");
        let shown = upstream.replace(
            &format!("{}", unbound.tls),
            &format!("127.0.0.1:{}", unbound.tls.port()),
        );
        let shown = if transport == "https" {
            format!(
                "https://127.0.0.1:{}/dns-query#{SERVER_NAME}",
                unbound.https.port()
            )
        } else {
            shown
        };
        let q = value(
            &body,
            &series("telesink_upstream_queries_total", &shown, transport),
        );
        assert_eq!(q, Some(11.0), "{shown}: {body}");
        let opened = value(
            &body,
            &series(
                "telesink_upstream_connections_opened_total",
                &shown,
                transport,
            ),
        )
        .unwrap_or(0.0);
        let reused = value(
            &body,
            &series(
                "telesink_upstream_connections_reused_total",
                &shown,
                transport,
            ),
        )
        .unwrap_or(0.0);
        // At most one handshake per pooled connection (2), every other query reused one.
        assert!((1.0..=2.0).contains(&opened), "opened {opened}: {body}");
        assert!(reused >= 9.0, "reused {reused}: {body}");
        assert_eq!(
            value(
                &body,
                &format!(
                    "telesink_upstream_handshake_seconds_count{{transport=\"{transport}\",upstream=\"{shown}\"}}"
                )
            ),
            Some(opened)
        );
        assert_eq!(errors(&body, &shown, transport, "certificate"), 0.0);
    }
}

#[test]
fn a_certificate_for_another_name_or_an_expired_one_is_refused() {
    let Some((pki, _good, _knot, unbound)) = servers_up() else {
        return;
    };
    let expired = pki.issue("expired", SERVER_NAME, true);
    let stale = Fixture::start(&expired, Behaviour::Answer);
    for (upstream, extra) in [
        (format!("tls://{}#wrong.test", unbound.tls), ""),
        (
            format!("https://{}/dns-query#wrong.test", unbound.https),
            "",
        ),
        (stale.upstream(), ""),
        // Opportunistic too: a certificate that does not check out is never a reason to
        // ask in clear text.
        (stale.upstream(), "encryption = \"opportunistic\""),
    ] {
        let (ts, metrics) = telesink(&pki, std::slice::from_ref(&upstream), extra);
        let m = ts.q("www.test", RecordType::A);
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::ServFail,
            "{upstream}"
        );
        assert_eq!(ede(&m).map(|e| e.0), Some(23), "{upstream}: {m:?}");
        let (_, body) = get(metrics, "/metrics");
        let transport = if upstream.starts_with("https") {
            "https"
        } else {
            "tls"
        };
        let shown = body
            .lines()
            .find_map(|l| {
                l.strip_prefix("telesink_upstream_queries_total{")?
                    .split("upstream=\"")
                    .nth(1)?
                    .split('"')
                    .next()
                    .map(str::to_owned)
            })
            .expect("the upstream's label");
        assert_eq!(
            errors(&body, &shown, transport, "certificate"),
            1.0,
            "{body}"
        );
        assert_eq!(
            value(
                &body,
                &series(
                    "telesink_upstream_cleartext_fallbacks_total",
                    &shown,
                    transport
                )
            ),
            Some(0.0)
        );
        // The log reaches the test through a pipe and a reading thread: wait for the line.
        assert!(
            ts.wait_log("never in clear text", Duration::from_secs(5)),
            "{}",
            ts.log_text()
        );
    }
    assert_eq!(
        stale.seen.queries.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

/// With one connection and a server that answers a batch last-first, each client still
/// gets the answer to its own question.
#[test]
fn pipelined_queries_answered_out_of_order_reach_their_askers() {
    let pki = Pki::new();
    let good = pki.issue("good", SERVER_NAME, false);
    let server = Fixture::start(&good, Behaviour::Reversed);
    let (ts, _) = telesink(&pki, &[server.upstream()], "connections = 1");
    let udp = ts.udp;
    let askers: Vec<_> = (1..=16u8)
        .map(|n| {
            std::thread::spawn(move || {
                let m = udp_query(
                    udp,
                    "127.0.0.1".parse().unwrap(),
                    &format!("q{n}.test"),
                    RecordType::A,
                    true,
                )
                .expect("answer");
                (n, addrs(&m))
            })
        })
        .collect();
    for a in askers {
        let (n, got) = a.join().unwrap();
        assert_eq!(got, [format!("192.0.2.{n}")]);
    }
    let seen = &server.seen;
    use std::sync::atomic::Ordering::SeqCst;
    assert_eq!(seen.connections.load(SeqCst), 1, "all on one connection");
    assert!(
        seen.reversed_batch.load(SeqCst) >= 2,
        "the server did answer out of order"
    );
    assert_eq!(
        seen.padded.load(SeqCst),
        seen.queries.load(SeqCst),
        "every query padded to 128 bytes"
    );
}

/// A server that hangs up in the middle of a connection: the query that was waiting is
/// asked again on a new connection (counted as a reset), and nobody gets SERVFAIL; a
/// server that hangs up on every query ends in SERVFAIL with EDE 23.
#[test]
fn a_server_that_hangs_up_is_reconnected_or_fails_as_the_policy_says() {
    let pki = Pki::new();
    let good = pki.issue("good", SERVER_NAME, false);
    let flaky = Fixture::start(&good, Behaviour::HangUpAfter(2));
    let (ts, metrics) = telesink(&pki, &[flaky.upstream()], "connections = 1");
    for i in 0..6 {
        let m = ts.q(&format!("q{}.test", i + 1), RecordType::A);
        assert_eq!(addrs(&m), [format!("192.0.2.{}", i + 1)]);
    }
    let (_, body) = get(metrics, "/metrics");
    let shown = format!("tls://{}#{SERVER_NAME}", flaky.addr);
    assert!(
        errors(&body, &shown, "tls", "connection_reset") >= 2.0,
        "{body}"
    );
    assert!(
        value(
            &body,
            &series("telesink_upstream_connections_opened_total", &shown, "tls")
        )
        .is_some_and(|n| n >= 3.0),
        "{body}"
    );
    drop(ts);

    let dead = Fixture::start(&good, Behaviour::HangUpAfter(0));
    let (ts, metrics) = telesink(&pki, &[dead.upstream()], "");
    let m = ts.q("www.test", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(ede(&m).map(|e| e.0), Some(23));
    let (_, body) = get(metrics, "/metrics");
    let shown = format!("tls://{}#{SERVER_NAME}", dead.addr);
    assert!(
        errors(&body, &shown, "tls", "connection_reset") >= 1.0,
        "{body}"
    );
}

/// A server slower than the budget: SERVFAIL with EDE 22 once the budget is spent,
/// counted as a timeout.
#[test]
fn a_slow_server_times_out_within_the_budget() {
    let pki = Pki::new();
    let good = pki.issue("good", SERVER_NAME, false);
    let slow = Fixture::start(&good, Behaviour::Slow(Duration::from_secs(3)));
    let (ts, metrics) = telesink(&pki, &[slow.upstream()], "timeout_ms = 400");
    let started = std::time::Instant::now();
    let m = ts.q("www.test", RecordType::A);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(ede(&m).map(|e| e.0), Some(22));
    let (_, body) = get(metrics, "/metrics");
    let shown = format!("tls://{}#{SERVER_NAME}", slow.addr);
    assert_eq!(errors(&body, &shown, "tls", "timeout"), 1.0, "{body}");
}

/// `--upstream` on the command line takes the forms of the config, and replaces its
/// servers (here a clear-text one, which strict would refuse beside an encrypted one).
#[test]
fn the_command_line_takes_encrypted_upstreams_too() {
    let pki = Pki::new();
    let good = pki.issue("good", SERVER_NAME, false);
    let server = Fixture::start(&good, Behaviour::Answer);
    let dir = TempDir::new("enc-cli");
    let cfg = dir.write(
        "telesink.toml",
        &format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\nservers = [\"192.0.2.1:53\"]\nca_file = \"{}\"\n",
            pki.ca_file.display()
        ),
    );
    let ts = Telesink::start_with(dir, &cfg, &["--upstream", &server.upstream()]);
    assert_eq!(addrs(&ts.q("q9.test", RecordType::A)), ["192.0.2.9"]);
    assert_eq!(
        server
            .seen
            .queries
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

/// An SPKI pin (RFC 7858 section 4.2) trusts the server by its key alone: no CA needed;
/// a pin that matches no key of the server is a certificate failure.
#[test]
fn a_pinned_server_is_trusted_by_its_key_alone() {
    let pki = Pki::new();
    let good = pki.issue("good", SERVER_NAME, false);
    let other = pki.issue("other", SERVER_NAME, false);
    let server = Fixture::start(&good, Behaviour::Answer);
    let start = |pin: &str| {
        let dir = TempDir::new("enc-pin");
        let cfg = dir.write(
            "telesink.toml",
            &format!(
                "[server]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\nservers = [\"{}\"]\n[upstream.pins]\n\"{SERVER_NAME}\" = [\"{pin}\"]\n",
                server.upstream()
            ),
        );
        Telesink::start_with(dir, &cfg, &[])
    };
    let pinned = start(&good.pin);
    assert_eq!(addrs(&pinned.q("q5.test", RecordType::A)), ["192.0.2.5"]);
    drop(pinned);
    let wrong = start(&other.pin);
    let m = wrong.q("q6.test", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(ede(&m).map(|e| e.0), Some(23));
    // The log reaches the test through a pipe and a reading thread, after the answer:
    // wait for the line (reading it at once failed in CI when the thread was late).
    assert!(
        wrong.wait_log("matches its pin", Duration::from_secs(5)),
        "{}",
        wrong.log_text()
    );
}

/// A server written by name is reached at its bootstrap addresses, no lookup of its own
/// name; an idle connection closes after `idle_timeout_secs`; a server that refuses
/// connections is tried again only after a backoff.
#[test]
fn bootstrap_idle_close_and_backoff() {
    let pki = Pki::new();
    let good = pki.issue("good", SERVER_NAME, false);
    let server = Fixture::start(&good, Behaviour::Answer);
    let by_name = format!("tls://{SERVER_NAME}:{}", server.addr.port());
    let (ts, metrics) = telesink(
        &pki,
        std::slice::from_ref(&by_name),
        "idle_timeout_secs = 1\n[upstream.bootstrap]\n\"dns.test\" = [\"127.0.0.1\"]",
    );
    assert_eq!(addrs(&ts.q("q7.test", RecordType::A)), ["192.0.2.7"]);
    let shown = format!("tls://{SERVER_NAME}:{}", server.addr.port());
    let open = |body: &str| {
        value(
            body,
            &series("telesink_upstream_connections_open", &shown, "tls"),
        )
    };
    let (_, body) = get(metrics, "/metrics");
    assert_eq!(open(&body), Some(1.0), "{body}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, body) = get(metrics, "/metrics");
        if open(&body) == Some(0.0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the idle connection stayed open: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(ts);

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let refused = format!("tls://127.0.0.1:{port}#{SERVER_NAME}");
    let (ts, metrics) = telesink(&pki, std::slice::from_ref(&refused), "");
    for _ in 0..3 {
        assert_eq!(
            ts.q("www.test", RecordType::A).metadata.response_code,
            ResponseCode::ServFail
        );
    }
    let (_, body) = get(metrics, "/metrics");
    assert_eq!(errors(&body, &refused, "tls", "connect"), 1.0, "{body}");
    assert_eq!(errors(&body, &refused, "tls", "backoff"), 2.0, "{body}");
}

/// AD passes only with `trust_ad` and only to a client that asked (DO or AD).
#[test]
fn the_ad_bit_passes_only_when_trusted_and_asked_for() {
    let pki = Pki::new();
    let good = pki.issue("good", SERVER_NAME, false);
    let server = Fixture::start(&good, Behaviour::Answer);
    let ask = |ts: &Telesink, name: &str, dnssec_ok: bool| -> Message {
        let mut m = query_message(name, RecordType::A, false);
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        edns.set_dnssec_ok(dnssec_ok);
        m.set_edns(edns);
        let reply = udp_raw(ts.udp, "127.0.0.1".parse().unwrap(), &m.to_vec().unwrap()).unwrap();
        Message::from_vec(&reply).unwrap()
    };
    let (trusting, _) = telesink(&pki, &[server.upstream()], "trust_ad = true");
    assert!(ask(&trusting, "q1.test", true).metadata.authentic_data);
    assert!(!ask(&trusting, "q2.test", false).metadata.authentic_data);
    drop(trusting);
    let (wary, _) = telesink(&pki, &[server.upstream()], "");
    assert!(!ask(&wary, "q3.test", true).metadata.authentic_data);
}

/// `check` (and so a start and a reload) refuse what would leak or cannot work, and
/// warn about clear text on a gateway with its firewall on.
#[test]
fn check_refuses_unsafe_upstream_settings_and_warns_about_clear_text() {
    let dir = TempDir::new("enc-check");
    check_refuses(
        &dir,
        &[
        (
            "servers = [\"tls://192.0.2.1#dns.example\", \"192.0.2.2:53\"]",
            "encryption = \"opportunistic\"",
        ),
        (
            "servers = [\"https://dns.example/dns-query\"]",
            "[upstream.bootstrap] \"dns.example\"",
        ),
        ("servers = [\"tls://192.0.2.1\"]", "#dns.example"),
        ("servers = [\"192.0.2.2:53\"]\ntrust_ad = true", "trust_ad"),
        (
            "servers = [\"tls://192.0.2.1#dns.example\"]\nca_file = \"/nonexistent/ca.pem\"",
            "ca_file",
        ),
        (
            "servers = [\"tls://192.0.2.1#dns.example\"]\n[upstream.pins]\n\"dns.example\" = [\"nope\"]",
            "SHA-256",
        ),
    ].map(|(u, s)| (format!("[upstream]\n{u}\n"), s)),
    );
    let bootstrapped = "[upstream]\nservers = [\"https://dns.example/dns-query\", \"tls://dns.example\"]\n[upstream.bootstrap]\n\"dns.example\" = [\"192.0.2.1\", \"2001:db8::1\"]\n";
    let cfg = dir.write("telesink.toml", bootstrapped);
    let (ok, out) = check(&cfg);
    assert!(ok, "{out}");
    assert!(!out.contains("clear text"), "{out}");
    let clear =
        "[upstream]\nservers = [\"192.0.2.2:53\"]\n[firewall]\nenabled = true\nlan = [\"lo\"]\n";
    let cfg = dir.write("telesink.toml", clear);
    let (ok, out) = check(&cfg);
    assert!(ok, "{out}");
    assert!(out.contains("192.0.2.2:53 in clear text"), "{out}");
}
