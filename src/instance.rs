//! One daemon per control socket and state file. A second `telesink run` on the same
//! config used to unlink the first one's socket, re-program its table and then fail on
//! the DNS port, leaving the first unreachable. It now refuses before it touches any of
//! that: a control socket that answers means another daemon, and the state folder's lock
//! is held by whoever runs. A socket file nobody answers on is left for `bind` to replace.

use std::fs::{File, TryLockError};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use tracing::warn;

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error(
        "telesink is already running: its control socket {0} answers (stop it first, or give this one its own control.socket and control.state_file)"
    )]
    SocketAnswers(PathBuf),
    #[error(
        "telesink is already running: {0} is locked by another telesink (stop it first, or give this one its own control.state_file)"
    )]
    Locked(PathBuf),
}

/// Held for the daemon's life; the lock goes with the process.
pub struct Instance {
    _lock: Option<File>,
}

pub fn claim(socket: &Path, state_file: &Path) -> Result<Instance, InstanceError> {
    if UnixStream::connect(socket).is_ok() {
        return Err(InstanceError::SocketAnswers(socket.to_owned()));
    }
    let lock_path = state_file.with_extension("lock");
    let file =
        std::fs::create_dir_all(lock_path.parent().unwrap_or(Path::new("."))).and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
        });
    let file = match file {
        Ok(f) => f,
        Err(e) => {
            // A trial run as a normal user cannot write /var/lib/telesink; the socket
            // check above still holds, and this says what is not guarded.
            warn!(
                "cannot open the lock file {} ({e}); only the control socket guards against a second daemon",
                lock_path.display()
            );
            return Ok(Instance { _lock: None });
        }
    };
    match file.try_lock() {
        Ok(()) => Ok(Instance { _lock: Some(file) }),
        Err(TryLockError::WouldBlock) => Err(InstanceError::Locked(lock_path)),
        Err(TryLockError::Error(e)) => {
            warn!("cannot lock {} ({e})", lock_path.display());
            Ok(Instance { _lock: Some(file) })
        }
    }
}
