//! The CLI's side of the control socket: one HTTP/1.1 request per command, blocking.
//!
//! Hand-written rather than a full HTTP client: the server is ours, answers with
//! `Connection: close` and a Content-Length, and the CLI must work without a runtime.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach telesink at {path}: {source} (is it running? is your user in the socket's group? --socket PATH)"
    )]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("control socket {path}: malformed answer")]
    Malformed { path: PathBuf },
    /// The socket could not be reached and the config that would name it does not parse.
    #[error(
        "cannot reach telesink at {path}: {source}; the config {config} does not parse, so its control.socket could not be read:\n{parse}"
    )]
    BrokenConfig {
        path: PathBuf,
        source: std::io::Error,
        config: PathBuf,
        parse: String,
    },
    /// The daemon refused the request; the text is its error message.
    #[error("{0}")]
    Refused(String),
}

/// Sends one request; returns the JSON body of a 2xx answer, else the daemon's error.
pub fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<serde_json::Value, ClientError> {
    let io = |source| ClientError::Io {
        path: socket.to_owned(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: socket.to_owned(),
        source,
    })?;
    // A reload of a big list takes a second or two; anything past this is a hang.
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(io)?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: telesink\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).map_err(io)?;
    stream.write_all(body.as_bytes()).map_err(io)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(io)?;
    let malformed = || ClientError::Malformed {
        path: socket.to_owned(),
    };
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(malformed)?;
    let head = std::str::from_utf8(&answer[..split]).map_err(|_| malformed())?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(malformed)?;
    let value: serde_json::Value =
        serde_json::from_slice(&answer[split + 4..]).map_err(|_| malformed())?;
    if (200..300).contains(&status) {
        Ok(value)
    } else {
        Err(ClientError::Refused(
            value
                .get("error")
                .and_then(|e| e.as_str())
                .map_or_else(|| value.to_string(), str::to_owned),
        ))
    }
}

/// "90s", "30m", "2h", "1d", or plain seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, ""), |i| text.split_at(i));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("not a duration: {text:?} (use e.g. 90s, 30m, 2h, 1d)"))?;
    let factor = match unit {
        // A bare number is refused: "--for 30" meant 30 minutes as often as 30 seconds.
        "" => {
            return Err(format!(
                "{text:?} has no unit: write {text}s, {text}m, {text}h or {text}d"
            ));
        }
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("unknown unit in {text:?} (use s, m, h or d)")),
    };
    match n.checked_mul(factor) {
        Some(0) => Err("a duration of zero would revert at once".into()),
        Some(secs) => Ok(secs),
        None => Err(format!("{text:?} is too long")),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations() {
        assert!(
            parse_duration("90")
                .unwrap_err()
                .contains("has no unit: write 90s, 90m")
        );
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("30m"), Ok(1800));
        assert_eq!(parse_duration("2h"), Ok(7200));
        assert_eq!(parse_duration("1d"), Ok(86400));
        assert!(parse_duration("0m").is_err());
        assert!(parse_duration("5w").is_err());
        assert!(parse_duration("m").is_err());
    }
}
