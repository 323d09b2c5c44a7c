//! Many sites, one view (issue 26), end to end in throwaway namespaces: a hub (one
//! nats-server with JetStream, domain `hub`), two sites whose own nats-servers are leaf
//! nodes of it, one telesink per site, devices asking with dig, and `telesink fleet` at
//! the centre. Days pass on the gateways' test clocks (src/clock.rs), not in real time.

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use common::fleet::*;
use common::netns::require_root;
use common::site::wait;
use common::*;
use serde_json::Value;

static ONE_FLEET: Mutex<()> = Mutex::new(());

fn fleet() -> Option<(std::sync::MutexGuard<'static, ()>, Fleet)> {
    if !require_root() || !require("nats-server") || !require("knotd") || !require("dig") {
        return None;
    }
    let lock = ONE_FLEET.lock().unwrap_or_else(|e| e.into_inner());
    let f = Fleet::new();
    for site in ["a", "b"] {
        let (ok, out, err) = f.fleet(&["site", "add", site]);
        assert!(ok, "fleet site add {site}: {out}{err}");
    }
    Some((lock, f))
}

const DAY: u64 = 86_400;

fn today() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs()
        / DAY
}

fn day(n: u64) -> String {
    telesink::clock::utc_date(n * DAY)
}

/// Ends the day: waits until both gateways wrote what they counted, then moves their
/// clocks to `days` days after today and waits until they see it (the clock file is
/// read every 50 ms).
fn set_days(f: &Fleet, days: u64) {
    for s in ["a", "b"] {
        flushed(f, s);
    }
    for s in ["a", "b"] {
        f.set_clock(s, days * DAY);
    }
    for s in ["a", "b"] {
        let needle = format!("time moved {} s ahead", days * DAY);
        assert!(
            f.gw(s).wait_log(&needle, Duration::from_secs(5)),
            "{needle}"
        );
    }
}

fn report(f: &Fleet, since: &str, until: &str) -> Value {
    let (ok, out, err) = f.fleet(&[
        "report", "--since", since, "--until", until, "--format", "json",
    ]);
    assert!(ok, "fleet report: {out}{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// (site, day, client, name) -> blocked DNS attempts, from the report's rows.
fn dns_blocked(r: &Value) -> BTreeMap<(String, String, String, String), u64> {
    let mut out = BTreeMap::new();
    for row in r["rows"].as_array().into_iter().flatten() {
        if row["layer"] != "dns-blocked" {
            continue;
        }
        let key = (
            row["site"].as_str().unwrap_or_default().to_owned(),
            row["day"].as_str().unwrap_or_default().to_owned(),
            row["client"].as_str().unwrap_or_default().to_owned(),
            row["name"].as_str().unwrap_or_default().to_owned(),
        );
        *out.entry(key).or_default() += row["count"].as_u64().unwrap_or(0);
    }
    out
}

/// Whether the hub has every closed day of `site` up to `last` (a day record).
fn has_day(r: &Value, site: &str, last: &str) -> bool {
    r["gateways"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|g| g["site"] == site && g["last_day"].as_str().is_some_and(|d| d >= last))
}

/// Whether `telesink status` at `site` lists a setting of `profile` from `origin`
/// (central, site or node); the status is printed when it does not.
fn setting_from(f: &Fleet, site: &str, origin: &str, profile: &str) -> bool {
    let (_, status, _) = f.gw(site).ctl(&["status"]);
    let found = status
        .lines()
        .any(|l| l.trim_start().starts_with(origin) && l.contains(profile));
    if !found {
        eprintln!("{site}'s status:\n{status}");
    }
    found
}

fn ask_n(f: &Fleet, site: &str, device: u8, name: &str, n: usize, expect: &str) {
    for _ in 0..n {
        assert_eq!(
            f.ask(site, device, name),
            expect,
            "{site} device .{device} {name}"
        );
    }
}

/// Waits until the gateway has written what it counted (two flushes, nothing pending).
fn flushed(f: &Fleet, site: &str) {
    let read = |body: &str, series: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(f64::NAN)
    };
    let flushes = |b: &str| read(b, "telesink_evidence_flushes_total{result=\"ok\"}");
    let first = flushes(&f.metrics(site));
    wait("the ledger to catch up", Duration::from_secs(20), || {
        let b = f.metrics(site);
        flushes(&b) >= first + 2.0 && read(&b, "telesink_evidence_pending_rows") == 0.0
    });
}

/// A central toggle reaches both sites' DNS and firewall, under a node's own override;
/// a site cut from the hub keeps its last central policy, keeps enforcing and keeps
/// recording; after the link returns the central report has every row of the outage,
/// exactly as the devices sent them, and the chains verify.
#[test]
fn central_policy_and_evidence_through_an_outage() {
    let Some((_lock, mut f)) = fleet() else {
        return;
    };
    let d0 = today();
    f.start_gateway("a", "address", None);
    f.start_gateway("b", "pseudonym", None);
    let cfg = f.fleet_config();
    let cfg = cfg.to_str().expect("path");
    // The firewall rejects a profile's ranges by a rule named after it.
    let rejects_ads = |s: &str| f.table(s).contains("comment \"profile ads\"");
    for s in ["a", "b"] {
        assert_eq!(f.ask(s, 50, "banner.ads.test"), "NXDOMAIN");
        assert!(
            rejects_ads(s) && f.table(s).contains("203.0.113.200"),
            "{}",
            f.table(s)
        );
    }

    // A central toggle: both sites, DNS and firewall.
    let (ok, out, err) = f.fleet(&[
        "profile",
        "disable",
        "ads",
        "--why",
        "ticket 26",
        "--config",
        cfg,
    ]);
    assert!(ok && out.contains("central revision"), "{out}{err}");
    for s in ["a", "b"] {
        wait(
            "the central toggle at a site",
            Duration::from_secs(10),
            || f.ask(s, 50, "banner.ads.test") == "NOERROR" && !rejects_ads(s),
        );
    }
    assert!(
        setting_from(&f, "a", "central", "ads"),
        "status says where the setting comes from"
    );
    // A node's own override wins over the central entry, and only there.
    let (ok, out, err) = f.gw("a").ctl(&["profile", "enable", "ads", "--local"]);
    assert!(ok, "{out}{err}");
    assert_eq!(f.ask("a", 50, "banner.ads.test"), "NXDOMAIN");
    assert_eq!(f.ask("b", 50, "banner.ads.test"), "NOERROR");
    assert!(setting_from(&f, "a", "node", "ads"));
    let (ok, out, err) = f.gw("a").ctl(&["profile", "reset", "ads", "--local"]);
    assert!(ok, "{out}{err}");
    assert_eq!(f.ask("a", 50, "banner.ads.test"), "NOERROR");

    // Day 0: what each site's devices try.
    ask_n(&f, "a", 50, "nexus.tele.test", 3, "NXDOMAIN");
    ask_n(&f, "a", 51, "settings.tele.test", 2, "NXDOMAIN");
    ask_n(&f, "b", 50, "nexus.tele.test", 4, "NXDOMAIN");
    ask_n(&f, "b", 52, "nexus.tele.test", 1, "NXDOMAIN");
    set_days(&f, 1);
    wait(
        "day 0 of both sites at the hub",
        Duration::from_secs(30),
        || {
            let r = report(&f, &day(d0), &day(d0));
            has_day(&r, "a", &day(d0)) && has_day(&r, "b", &day(d0))
        },
    );

    // Site a is cut from the hub: it keeps its last central policy and enforces.
    f.cut("a", true);
    let (ok, out, err) = f.fleet(&["profile", "reset", "ads", "--why", "back", "--config", cfg]);
    assert!(ok, "{out}{err}");
    wait(
        "the reset at the connected site",
        Duration::from_secs(10),
        || f.ask("b", 50, "banner.ads.test") == "NXDOMAIN" && rejects_ads("b"),
    );
    assert_eq!(
        f.ask("a", 50, "banner.ads.test"),
        "NOERROR",
        "a keeps its last central policy"
    );
    assert!(!rejects_ads("a"));
    // Day 1, during the outage.
    ask_n(&f, "a", 50, "nexus.tele.test", 7, "NXDOMAIN");
    ask_n(&f, "a", 52, "settings.tele.test", 5, "NXDOMAIN");
    ask_n(&f, "b", 51, "nexus.tele.test", 2, "NXDOMAIN");
    set_days(&f, 2);
    // The site's own stream took day 1 (store), the hub has not (forward later).
    wait(
        "day 1 sent to site a's own stream",
        Duration::from_secs(30),
        || {
            let (_, s, _) = f.gw("a").ctl(&["status", "--json"]);
            let v: Value = serde_json::from_str(&s).unwrap_or(Value::Null);
            v["cluster"]["fleet"]["days_sent"].as_u64().unwrap_or(0) >= 2
                && v["cluster"]["fleet"]["days_due"].as_u64() == Some(0)
        },
    );
    // The gateway's metrics say it too (scraped by the site's Prometheus).
    let m = f.metrics("a");
    assert!(m.contains("telesink_fleet_days_due 0"), "{m}");
    assert!(m.contains("telesink_fleet_central_revision 1"), "{m}");
    let during = report(&f, &day(d0), &day(d0 + 1));
    assert!(
        !has_day(&during, "a", &day(d0 + 1)),
        "the hub cannot have it yet"
    );
    assert!(has_day(&during, "b", &day(d0 + 1)));

    // The link returns: everything arrives, the central reset reaches site a.
    f.cut("a", false);
    wait(
        "site a's outage at the hub",
        Duration::from_secs(60),
        || has_day(&report(&f, &day(d0), &day(d0 + 1)), "a", &day(d0 + 1)),
    );
    wait(
        "the central reset at site a",
        Duration::from_secs(30),
        || f.ask("a", 50, "banner.ads.test") == "NXDOMAIN",
    );
    let r = report(&f, &day(d0), &day(d0 + 1));
    let rows = dns_blocked(&r);
    let a = |d: u64, client: &str, name: &str| {
        rows.get(&("a".into(), day(d), client.into(), name.into()))
            .copied()
    };
    assert_eq!(a(d0, "192.0.2.50", "nexus.tele.test"), Some(3), "{rows:?}");
    assert_eq!(a(d0, "192.0.2.51", "settings.tele.test"), Some(2));
    assert_eq!(a(d0 + 1, "192.0.2.50", "nexus.tele.test"), Some(7));
    assert_eq!(a(d0 + 1, "192.0.2.52", "settings.tele.test"), Some(5));
    // Site b writes pseudonyms: its devices by their counts, and no address anywhere.
    let mut b: Vec<(String, u64)> = rows
        .iter()
        .filter(|(k, _)| k.0 == "b" && k.3.ends_with("tele.test"))
        .map(|(k, n)| (k.1.clone(), *n))
        .collect();
    b.sort();
    assert_eq!(
        b,
        [(day(d0), 1), (day(d0), 4), (day(d0 + 1), 2)],
        "{rows:?}"
    );
    let text = serde_json::to_string(&r["rows"]).expect("json");
    for row in r["rows"].as_array().into_iter().flatten() {
        if row["site"] == "b" {
            assert!(
                !row["client"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("192.0.2."),
                "{row}"
            );
        }
    }
    assert!(text.contains("192.0.2.50"), "site a writes addresses");
    // The totals add up (the ads probes above are attempts too, of their own profile),
    // and the policy history is there.
    assert_eq!(
        r["totals"]["tele"]["dns-blocked"].as_u64(),
        Some(3 + 2 + 4 + 1 + 7 + 5 + 2),
        "{}",
        r["totals"]
    );
    let central: Vec<String> = r["central_changes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["what"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        central.iter().any(|w| w.contains("ticket 26")),
        "{central:?}"
    );
    assert!(
        r["policy"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["site"] == "a"),
        "the policy in force per site and day: {}",
        r["policy"]
    );
    let (ok, out, err) = f.fleet(&["verify", "--since", &day(d0), "--until", &day(d0 + 1)]);
    assert!(ok, "every chain verifies: {out}{err}");
    assert!(
        out.contains("a/gwa") && out.contains("b/gwb") && out.contains("verifies"),
        "{out}"
    );
    // The page: one per site.
    let (ok, html, err) = f.fleet(&[
        "report",
        "--since",
        &day(d0),
        "--until",
        &day(d0 + 1),
        "--format",
        "html",
    ]);
    assert!(
        ok && html.contains("id=\"site-a\"") && html.contains("id=\"site-b\""),
        "{err}"
    );
}

/// What the centre refuses and names: records that do not parse, claim another site,
/// or carry a block that does not give its digest (the rest of the stream still
/// counts); and a gateway whose ledger was altered after its days were sent.
#[test]
fn altered_foreign_and_malformed_evidence_is_named() {
    let Some((_lock, mut f)) = fleet() else {
        return;
    };
    let d0 = today();
    f.start_gateway("a", "address", None);
    f.start_gateway("b", "address", None);
    ask_n(&f, "a", 50, "nexus.tele.test", 6, "NXDOMAIN");
    set_days(&f, 1);
    ask_n(&f, "a", 51, "nexus.tele.test", 2, "NXDOMAIN");
    set_days(&f, 2);
    wait("both days at the hub", Duration::from_secs(30), || {
        let r = report(&f, &day(d0), &day(d0 + 1));
        has_day(&r, "a", &day(d0 + 1)) && has_day(&r, "b", &day(d0 + 1))
    });
    let (ok, out, err) = f.fleet(&["verify", "--since", &day(d0), "--until", &day(d0 + 1)]);
    assert!(ok, "{out}{err}");

    // Four bad records on site b's subject: the first part of two of a day whose
    // second never comes (the records after it show the gateway went on), ...
    let lone_part = format!(
        r#"{{"kind":"part","version":1,"site":"b","gateway":"gwb","day":"{}","whole":"{}","index":0,"count":2,"data":"AAAA"}}"#,
        day(d0),
        "0".repeat(64)
    );
    f.publish_raw("b", "telesink.evidence.b.gwb", lone_part.as_bytes());
    f.publish_raw("b", "telesink.evidence.b.gwb", b"not json at all");
    let foreign = format!(
        r#"{{"kind":"head","version":1,"site":"a","gateway":"gwa","at":1,"open_day":"{}","chain":[],"broken_at":null,"breaks":0,"telesink":"x"}}"#,
        day(d0)
    );
    f.publish_raw("b", "telesink.evidence.b.gwb", foreign.as_bytes());
    let bad_block = format!(
        r#"{{"kind":"day","version":1,"site":"b","gateway":"gwb","day":"{}","rows":1,"digest":"00","previous":"","block":"AAAA","purges":[],"policies":[],"changes":[],"client_labels":"address","published_at":1}}"#,
        day(d0)
    );
    f.publish_raw("b", "telesink.evidence.b.gwb", bad_block.as_bytes());
    wait(
        "the bad records at the hub",
        Duration::from_secs(30),
        || {
            report(&f, &day(d0), &day(d0 + 1))["refused"]
                .as_array()
                .is_some_and(|r| r.len() == 4)
        },
    );
    let r = report(&f, &day(d0), &day(d0 + 1));
    let why: Vec<String> = r["refused"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| x["why"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        why[0].contains("1 of its 2 parts arrived, then the gateway sent other records"),
        "{why:?}"
    );
    assert!(why[1].contains("not a telesink evidence record"), "{why:?}");
    assert!(why[2].contains("foreign"), "{why:?}");
    assert!(why[3].contains("does not decode"), "{why:?}");
    // Nothing else broke: a's rows are all there.
    let rows = dns_blocked(&r);
    assert_eq!(
        rows.get(&(
            "a".into(),
            day(d0),
            "192.0.2.50".into(),
            "nexus.tele.test".into()
        )),
        Some(&6)
    );
    let (ok, out, _) = f.fleet(&["verify", "--since", &day(d0), "--until", &day(d0 + 1)]);
    assert!(!ok && out.contains("refused record"), "{out}");

    // Gateway a's ledger is altered after its days were sent: day 0's count raised and
    // the digest chain computed anew, as someone who knows the format would.
    let dir = f.stop_gateway("a");
    alter_ledger(&dir.path().join("evidence.sqlite"), &day(d0));
    f.start_gateway("a", "address", Some(dir));
    let mut said = String::new();
    let named = (0..150).any(|_| {
        std::thread::sleep(Duration::from_millis(200));
        let (ok, out, _) = f.fleet(&["verify", "--since", &day(d0), "--until", &day(d0 + 1)]);
        said = out;
        !ok && said
            .lines()
            .any(|l| l.starts_with("a/gwa") && l.contains("altered") && l.contains(&day(d0)))
    });
    assert!(named, "the centre names the altered ledger:\n{said}");
    // The report still shows what was sent first.
    let rows = dns_blocked(&report(&f, &day(d0), &day(d0 + 1)));
    assert_eq!(
        rows.get(&(
            "a".into(),
            day(d0),
            "192.0.2.50".into(),
            "nexus.tele.test".into()
        )),
        Some(&6)
    );
}

/// A large site's closed day is larger than one NATS message (1 MiB unless the servers
/// are set otherwise): it goes to the site's stream in parts and the centre has every
/// row of it, its digest verified. Before parts, such a day was never sent, and every
/// day after it waited behind it.
#[test]
fn a_day_larger_than_one_message_arrives_whole() {
    let Some((_lock, mut f)) = fleet() else {
        return;
    };
    let d0 = today();
    f.start_gateway("a", "address", None);
    let dir = f.stop_gateway("a");
    // Irregular rows (a distinct name each, scattered counts and times): a record of
    // 2.9 MB, 11 parts.
    let seeded = seed_day(&dir.path().join("evidence.sqlite"), d0, 120_000);
    f.start_gateway("a", "address", Some(dir));
    f.set_clock("a", DAY);
    assert!(
        f.gw("a")
            .wait_log(&format!("time moved {DAY} s ahead"), Duration::from_secs(5))
    );
    // Site b has no gateway here: verify names it silent, so its exit says nothing of a.
    let mut said = String::new();
    let sent = (0..300).any(|_| {
        std::thread::sleep(Duration::from_millis(200));
        let (_, out, _) = f.fleet(&["verify", "--since", &day(d0), "--until", &day(d0)]);
        said = out;
        said.contains("a/gwa: 1 days sent") || said.contains("refused")
    });
    assert!(
        sent && said.contains("a/gwa: 1 days sent, 1 sealed days chained: verifies")
            && !said.contains("refused")
            && !said.contains("a/gwa: day"),
        "{said}\n{}",
        f.gw("a").log_text()
    );
    assert!(f.gw("a").wait_log("went in parts", Duration::from_secs(5)));
    let r = report(&f, &day(d0), &day(d0));
    let got: BTreeMap<(String, String), u64> = dns_blocked(&r)
        .into_iter()
        .map(|((_, _, client, name), n)| ((client, name), n))
        .collect();
    assert_eq!(got.len(), seeded.len());
    assert!(got == seeded, "the centre's rows differ from the ledger's");
}

/// Writes `rows` irregular rows of day `d` into the open rows of a stopped gateway's
/// ledger (the next flush after the day ends seals them): (client, name) -> count.
fn seed_day(path: &std::path::Path, d: u64, rows: u64) -> BTreeMap<(String, String), u64> {
    // splitmix64: the same rows every run, no pattern for the compressor to find.
    let mix = |mut x: u64| {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    };
    let mut conn = rusqlite::Connection::open(path).expect("ledger");
    let tx = conn.transaction().expect("transaction");
    let mut seeded = BTreeMap::new();
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO evidence (day, client, profile, layer, name, count, first, last)
                 VALUES (?1, ?2, 'tele', 'dns-blocked', ?3, ?4, ?5, ?6)",
            )
            .expect("insert");
        for i in 0..rows {
            let h = mix(i);
            let client = format!("2001:db8::{:x}", i % 4000);
            let name = format!("n{h:016x}.tele.test");
            let count = 1 + mix(h) % 5000;
            let first = d * DAY + h % 80_000;
            let last = first + mix(h ^ 1) % 6000;
            insert
                .execute(rusqlite::params![
                    day(d),
                    client,
                    name,
                    count as i64,
                    first as i64,
                    last as i64
                ])
                .expect("row");
            seeded.insert((client, name), count);
        }
    }
    tx.commit().expect("commit");
    seeded
}

/// Raises the first row of `day` by 1000 and recomputes every digest from it.
fn alter_ledger(path: &std::path::Path, day: &str) {
    use telesink::evidence::block::{DayRows, compress, decompress};
    use telesink::evidence::store::chain_digest;
    let conn = rusqlite::Connection::open(path).expect("ledger");
    let block: Vec<u8> = conn
        .query_row("SELECT block FROM sealed WHERE day = ?1", [day], |r| {
            r.get(0)
        })
        .expect("a sealed day");
    let mut rows = DayRows::decode(&decompress(&block).expect("zstd")).expect("block");
    rows.rows[0].count += 1000;
    conn.execute(
        "UPDATE sealed SET block = ?2 WHERE day = ?1",
        rusqlite::params![day, compress(&rows.encode()).expect("zstd")],
    )
    .expect("update");
    let days: Vec<String> = conn
        .prepare("SELECT day FROM days ORDER BY day")
        .expect("days")
        .query_map([], |r| r.get(0))
        .expect("days")
        .map(|d| d.expect("day"))
        .collect();
    let mut previous = String::new();
    for d in days {
        let block: Vec<u8> = conn
            .query_row("SELECT block FROM sealed WHERE day = ?1", [&d], |r| {
                r.get(0)
            })
            .expect("block");
        let digest = chain_digest(&previous, &decompress(&block).expect("zstd"), &[]);
        conn.execute("UPDATE days SET digest = ?2 WHERE day = ?1", [&d, &digest])
            .expect("digest");
        previous = digest;
    }
}

/// A site's leaf user (contrib/nats/hub.conf, as shipped) may take the central policy
/// and answer for its own evidence, nothing more: it cannot read the hub's evidence or
/// another site's, nor write the central policy.
#[test]
fn a_site_may_reach_only_its_own() {
    let Some((_lock, mut f)) = fleet() else {
        return;
    };
    f.start_gateway("b", "address", None);
    let cfg = f.fleet_config();
    let (ok, out, err) = f.fleet(&[
        "profile",
        "disable",
        "ads",
        "--config",
        cfg.to_str().expect("path"),
    ]);
    assert!(ok, "{out}{err}");
    // What a site needs works through the same raw client: its own JetStream, and the
    // central policy's stream info (its mirror asks for it).
    let own = f.request_raw("a", "$JS.a.API.STREAM.INFO.telesink_evidence_a", "");
    assert!(own.contains("MSG _INBOX.raw"), "{own}");
    let central = f.request_raw("a", "$JS.hub.API.STREAM.INFO.KV_telesink_central", "");
    assert!(central.contains("KV_telesink_central"), "{central}");
    // What it may not: read the hub's evidence, read site b's, change the policy (the
    // stream info of the central bucket answered above, that of the evidence stream
    // does not: the difference is the user's permissions).
    for (subject, payload) in [
        (
            "$JS.hub.API.STREAM.MSG.GET.telesink_evidence",
            r#"{"seq":1}"#,
        ),
        ("$JS.hub.API.STREAM.INFO.telesink_evidence", ""),
        (
            "$JS.b.API.STREAM.MSG.GET.telesink_evidence_b",
            r#"{"seq":1}"#,
        ),
        ("$JS.hub.API.STREAM.PURGE.KV_telesink_central", ""),
    ] {
        let got = f.request_raw("a", subject, payload);
        assert!(got.is_empty(), "site a got an answer on {subject}: {got}");
    }
    f.publish_raw("a", "$KV.telesink_central.fleet", b"{\"version\":1}");
    std::thread::sleep(Duration::from_secs(1));
    let (ok, policy, err) = f.fleet(&["policy"]);
    assert!(ok, "{err}");
    assert_eq!(
        policy.matches("revision").count(),
        2,
        "one write, the admin's:\n{policy}"
    );
}
