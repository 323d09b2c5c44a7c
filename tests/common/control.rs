//! The control-plane tests' daemon: two profiles (tele on, ads off), a group "finance",
//! a real knotd answering every name, and the CLI against the daemon's socket.

use super::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

pub const TELE: &str = "nexus.tele.test";
pub const ADS: &str = "banner.ads.test";

pub fn config(knot: &Knot, extra: &str) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
[upstream]
servers = ["{}"]
[policy]
lists_dir = "."
allowed_clients = ["127.0.0.0/8"]
[profiles.tele]
enabled = true
mode = "nxdomain"
lists = ["tele.list"]
[profiles.ads]
lists = ["ads.list"]
[[groups]]
name = "finance"
clients = ["127.0.0.2/32"]
hosts = {{ "reception-pc" = "127.0.0.3" }}
{extra}"#,
        knot.addr
    )
}

pub fn start(extra: &str, args: &[&str]) -> Option<(Knot, Telesink)> {
    if !require("knotd") {
        return None;
    }
    let knot = Knot::start_zones(&[(".", ROOT_WILDCARD)]);
    let dir = TempDir::new("control");
    dir.write("tele.list", &format!("{TELE}\n*.more.tele.test\n"));
    dir.write("ads.list", &format!("{ADS}\nad1.ads.test\nad2.ads.test\n"));
    let extra = extra.replace("{dir}", &dir.path().display().to_string());
    let cfg = dir.write("telesink.toml", &config(&knot, &extra));
    let ts = Telesink::start_with(dir, &cfg, args);
    Some((knot, ts))
}

pub fn restart(ts: Telesink, args: &[&str]) -> Telesink {
    let dir = ts.stop();
    let cfg = dir.path().join("telesink.toml");
    Telesink::start_with(dir, &cfg, args)
}

pub fn rcode(ts: &Telesink, from: &str, name: &str) -> ResponseCode {
    ts.q_from(from, name, RecordType::A).metadata.response_code
}

pub fn ok(ts: &Telesink, args: &[&str]) -> String {
    let (success, out, err) = ts.ctl(args);
    assert!(success, "telesink {args:?} failed:\n{out}{err}");
    out
}

pub fn json(ts: &Telesink, args: &[&str]) -> serde_json::Value {
    let mut args = args.to_vec();
    args.push("--json");
    serde_json::from_str(&ok(ts, &args)).expect("JSON output")
}
