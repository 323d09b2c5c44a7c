//! `telesink update-m365` against a local HTTP fixture serving recorded documents in the
//! endpoints web service's format (tests/fixtures/m365/): a first install, a version bump,
//! a malformed document, one that would shrink the allow set by more than half, and a
//! saved file for an offline gateway. The running daemon reloads what was written.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use common::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/m365");

/// Serves `/version/worldwide` and `/endpoints/worldwide` from what `doc` holds now:
/// (version, endpoints file name).
fn fixture_server(doc: Arc<Mutex<(String, String)>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(200) {
            let Ok(mut stream) = stream else { continue };
            let mut line = String::new();
            if BufReader::new(&stream).read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
            let (version, file) = doc.lock().unwrap().clone();
            let body = if path.starts_with("/version/worldwide?clientrequestid=") {
                format!("{{\"instance\": \"Worldwide\", \"latest\": \"{version}\"}}")
            } else if path.starts_with("/endpoints/worldwide?clientrequestid=") {
                std::fs::read_to_string(Path::new(FIXTURES).join(&file)).unwrap()
            } else {
                String::new()
            };
            let status = if body.is_empty() {
                "404 Not Found"
            } else {
                "200 OK"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}")
}

fn update(ts: &Telesink, cfg: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(bin())
        .arg("update-m365")
        .args(args)
        .arg("--config")
        .arg(cfg)
        .arg("--socket")
        .arg(ts.dir.path().join("control.sock"))
        .output()
        .unwrap();
    (out.status.success(), output_text(&out))
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join("blocklists").join(name)).unwrap_or_default()
}

#[test]
fn update_m365_installs_current_data_reloads_and_refuses_bad_documents() {
    if !require("knotd") {
        return;
    }
    // The service is reached by a name only the configured upstream knows: update-m365
    // looks names up through telesink's upstreams, not the system's resolver.
    let knot = Knot::start("m365 A 127.0.0.1\n");
    let doc = Arc::new(Mutex::new((
        "2025013000".to_owned(),
        "endpoints-2025013000.json".to_owned(),
    )));
    let service = fixture_server(doc.clone()).replace("127.0.0.1", "m365.test");
    let dir = TempDir::new("m365");
    // The shipped lists stand in for /usr/share/telesink/blocklists.
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/blocklists");
    let config = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\nservers = [\"{}\"]\n[policy]\nlists_dir = \"{shipped}\"\nrequired = \"m365-required.domains\"\n[firewall]\nallow_cidrs = [\"allow-m365-core.cidrs\"]\n[profiles.office-telemetry]\nenabled = true\nlists = [\"office-telemetry.domains\"]\n",
        knot.addr
    );
    let cfg = dir.write("telesink.toml", &config);
    // The same with the firewall on, only for `firewall show` (nothing is applied).
    let fw_cfg = dir.write(
        "firewall.toml",
        &config.replace(
            "[firewall]\n",
            "[firewall]\nenabled = true\nlan = [\"lan0\"]\n",
        ),
    );
    let ts = Telesink::start_with(dir, &cfg, &[]);
    let base = ts.dir.path().to_owned();

    // First install: the Required Optimize/Allow ranges and every Required name.
    let (ok, out) = update(&ts, &cfg, &["--from", &service]);
    assert!(ok, "{out}");
    assert!(out.contains("Microsoft 365 endpoints v2025013000"), "{out}");
    assert!(out.contains("93 ranges ->"), "{out}");
    assert!(
        out.contains("reloaded: the running daemon serves generation 2"),
        "{out}"
    );
    let allow = read(&base, "allow-m365-core.cidrs");
    assert!(allow.contains("# Date of the data: v2025013000"), "{allow}");
    assert!(allow.contains("40.96.0.0/13  # MS-M365 ID1"), "{allow}");
    assert!(
        !allow.contains("192.0.2.0/24"),
        "an optional entry is never allowed"
    );
    let required = read(&base, "m365-required.domains");
    assert!(
        required.contains("login.microsoftonline.com  # MS-M365 ID56"),
        "{required}"
    );
    assert!(!required.contains("optional.example"));
    let (fine, text) = check(&cfg);
    assert!(fine, "{text}");
    assert!(ts.wait_log("reloaded", std::time::Duration::from_secs(5)));

    // A version bump: two ranges gone, one new; the firewall's accept set follows.
    *doc.lock().unwrap() = ("2026110100".into(), "endpoints-2026110100.json".into());
    let (ok, out) = update(&ts, &cfg, &["--from", &service]);
    assert!(ok, "{out}");
    assert!(
        out.contains("92 ranges ->") && out.contains("was 93"),
        "{out}"
    );
    let allow = read(&base, "allow-m365-core.cidrs");
    assert!(allow.contains("# Date of the data: v2026110100"), "{allow}");
    assert!(allow.contains("52.127.0.0/16"), "{allow}");
    assert!(!allow.contains("40.96.0.0/13"), "{allow}");
    let show = Command::new(bin())
        .args(["firewall", "show", "--config"])
        .arg(&fw_cfg)
        .output()
        .unwrap();
    let plan = String::from_utf8_lossy(&show.stdout);
    // nft writes ranges as intervals.
    assert!(plan.contains("52.127.0.0-52.127.255.255"), "{plan}");
    assert!(!plan.contains("40.96.0.0-40.103.255.255"), "{plan}");

    // Malformed and shrinking documents are refused; nothing changes.
    let before = read(&base, "allow-m365-core.cidrs");
    for (file, why) in [
        ("endpoints-truncated.json", "cannot parse the endpoint data"),
        ("endpoints-shrunk.json", "would shrink by more than half"),
    ] {
        *doc.lock().unwrap() = ("2026110200".into(), file.into());
        let (ok, out) = update(&ts, &cfg, &["--from", &service]);
        assert!(!ok, "{file}: {out}");
        assert!(out.contains(why), "{file}: {out}");
        assert!(out.contains("nothing changed"), "{out}");
        assert_eq!(read(&base, "allow-m365-core.cidrs"), before, "{file}");
    }
    // An unreachable service: a clear error, nothing changed.
    let (ok, out) = update(&ts, &cfg, &["--from", "http://127.0.0.1:9"]);
    assert!(!ok);
    assert!(
        out.contains("cannot fetch http://127.0.0.1:9/version/worldwide"),
        "{out}"
    );

    // Offline gateway: a saved document and its version.
    let saved = Path::new(FIXTURES).join("endpoints-2025013000.json");
    let (ok, out) = update(
        &ts,
        &cfg,
        &["--from", saved.to_str().unwrap(), "--version", "2025013000"],
    );
    assert!(ok, "{out}");
    assert!(read(&base, "allow-m365-core.cidrs").contains("40.96.0.0/13"));
    // With the daemon gone, the files are written for its next start.
    let dir = ts.stop();
    *doc.lock().unwrap() = ("2026110100".into(), "endpoints-2026110100.json".into());
    let out = Command::new(bin())
        .args(["update-m365", "--from", &service, "--config"])
        .arg(&cfg)
        .arg("--socket")
        .arg(dir.path().join("control.sock"))
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("telesink is not running"), "{text}");
    assert!(read(dir.path(), "allow-m365-core.cidrs").contains("v2026110100"));
}

/// Hostile documents (tests/fixtures/m365/endpoints-hostile-*.json: a service area and a
/// URL that carry line breaks to add entries, Required ranges of 0.0.0.0/0 and ::/0), an
/// oversized file, and a hand-written accept list of 0.0.0.0/0: none of them reaches the
/// firewall's accept set, each with a clear error, and nothing changes on disk.
#[test]
fn nothing_imported_opens_the_firewall() {
    let dir = TempDir::new("m365-hostile");
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/blocklists");
    let config = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[policy]\nlists_dir = \"{shipped}\"\nrequired = \"m365-required.domains\"\n[firewall]\nallow_cidrs = [\"allow-m365-core.cidrs\"]\n[profiles.office-telemetry]\nenabled = true\nlists = [\"office-telemetry.domains\"]\ncidrs = [\"office-telemetry.cidrs\"]\n"
    );
    let cfg = dir.write("telesink.toml", &config);
    let socket = dir.path().join("control.sock");
    let run = |args: &[&str]| {
        let out = Command::new(bin())
            .arg("update-m365")
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .arg("--socket")
            .arg(&socket)
            .output()
            .unwrap();
        (out.status.success(), output_text(&out))
    };
    let fixture = |name: &str| Path::new(FIXTURES).join(name).display().to_string();
    let (ok, out) = run(&[
        "--from",
        &fixture("endpoints-2025013000.json"),
        "--version",
        "2025013000",
    ]);
    assert!(ok, "{out}");
    let before = read(dir.path(), "allow-m365-core.cidrs");
    let before_names = read(dir.path(), "m365-required.domains");
    let opened = |text: &str| {
        text.lines().any(|l| {
            l.starts_with("0.0.0.0/0")
                || l.starts_with("::/0")
                || l.starts_with("telemetry.example.org")
        })
    };
    assert!(!opened(&before));
    for (file, why) in [
        (
            "endpoints-hostile-servicearea.json",
            "is not a service area name",
        ),
        (
            "endpoints-hostile-url.json",
            "is not a host name or a wildcard",
        ),
        (
            "endpoints-hostile-everything.json",
            "lists 0.0.0.0/0, broader than /12",
        ),
    ] {
        let (ok, out) = run(&["--from", &fixture(file), "--version", "2025013100"]);
        assert!(!ok, "{file}: {out}");
        assert!(
            out.contains(why) && out.contains("nothing changed"),
            "{file}: {out}"
        );
        assert_eq!(read(dir.path(), "allow-m365-core.cidrs"), before, "{file}");
        assert_eq!(
            read(dir.path(), "m365-required.domains"),
            before_names,
            "{file}"
        );
    }
    // --allow-broad writes the broad ranges with a warning, and then the compiler, which
    // refuses them unless firewall.allow_broad says so, puts the previous lists back.
    let (ok, out) = run(&[
        "--from",
        &fixture("endpoints-hostile-everything.json"),
        "--version",
        "2025013100",
        "--allow-broad",
    ]);
    assert!(!ok, "{out}");
    assert!(out.contains("was kept because of --allow-broad"), "{out}");
    assert!(
        out.contains("allow range 0.0.0.0/0 is broader than /12"),
        "{out}"
    );
    assert!(out.contains("the previous ones are back"), "{out}");
    assert_eq!(read(dir.path(), "allow-m365-core.cidrs"), before);

    // A file of any size is not read whole: past the cap it is refused.
    let big = dir.write("big.json", &" ".repeat(5 << 20));
    let (ok, out) = run(&["--from", big.to_str().unwrap(), "--version", "2025013100"]);
    assert!(!ok && out.contains("is larger than 4194304 bytes"), "{out}");

    // Whatever wrote it, an accept list of 0.0.0.0/0 or one covering a block range is an
    // error at its line for check (and so for start and reload); allow_broad makes it a
    // warning.
    dir.write(
        "blocklists/allow-m365-core.cidrs",
        "13.107.6.152/31\n0.0.0.0/0 # whole v4\n",
    );
    let (fine, text) = check(&cfg);
    assert!(!fine, "{text}");
    assert!(
        text.contains(
            "allow-m365-core.cidrs:2: allow range 0.0.0.0/0 is broader than /12 and covers"
        ),
        "{text}"
    );
    assert!(text.contains("which office-telemetry blocks"), "{text}");
    let covered = std::fs::read_to_string(Path::new(shipped).join("office-telemetry.cidrs"))
        .unwrap()
        .lines()
        .map(|l| l.split('#').next().unwrap().trim().to_owned())
        .find(|l| !l.is_empty())
        .unwrap();
    dir.write("blocklists/allow-m365-core.cidrs", &format!("{covered}\n"));
    let (fine, text) = check(&cfg);
    assert!(!fine, "{text}");
    assert!(
        text.contains(&format!(
            "allow-m365-core.cidrs:1: allow range {covered} covers {covered}, which office-telemetry blocks"
        )),
        "{text}"
    );
    let broad_cfg = dir.write(
        "broad.toml",
        &config.replace("[firewall]\n", "[firewall]\nallow_broad = true\n"),
    );
    let (fine, text) = check(&broad_cfg);
    assert!(fine, "{text}");
    assert!(
        text.contains("accepted: firewall.allow_broad = true"),
        "{text}"
    );
}
