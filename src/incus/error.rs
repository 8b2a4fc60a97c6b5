//! The client's one error type: every failure of a daemon call is classified here,
//! once, from the HTTP status and the daemon's `error_code`/message.

use std::path::PathBuf;

/// A failure talking to the Incus daemon.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No socket could be found, or nothing answers on it.
    #[error(
        "cannot reach the Incus daemon at {} ({reason}); start it with `sudo systemctl start incus` (without systemd: `sudo incusd --group incus-admin &`), or set INCUS_SOCKET to its socket",
        socket.display()
    )]
    Unreachable {
        /// The socket path that was tried.
        socket: PathBuf,
        /// What went wrong, in the operating system's words.
        reason: String,
    },
    /// The socket exists but this user may not connect to it.
    #[error(
        "permission denied on the Incus socket {}: your user is not in the Incus admin group; fix: `sudo usermod -aG incus-admin $USER`, then log in again (or run `newgrp incus-admin`)",
        socket.display()
    )]
    SocketPermission {
        /// The socket path that was tried.
        socket: PathBuf,
    },
    /// Nothing answers at a remote server's address.
    #[error(
        "cannot reach remote {remote} at {url} ({reason}); check the address (`cci remote list`) and that the server listens on the network (on it: `incus config set core.https_address :8443`)"
    )]
    RemoteUnreachable {
        /// The remote's name.
        remote: String,
        /// Its address.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A remote server's certificate is not the one cci was told to trust.
    #[error(
        "remote {remote}: {reason}; nothing was sent to it. If the server's certificate changed on purpose, check its fingerprint on the server (`incus info | grep fingerprint`) and add the remote again (`cci remote remove {remote}`, `cci remote add {remote} URL`)"
    )]
    RemoteCertificate {
        /// The remote's name.
        remote: String,
        /// What did not match.
        reason: String,
    },
    /// A remote server does not trust cci's client certificate.
    #[error(
        "remote {remote} does not trust this client: on the server, make a trust token (`incus config trust add NAME`) and run `cci remote add {remote} TOKEN`"
    )]
    Untrusted {
        /// The remote's name.
        remote: String,
    },
    /// The daemon began shutting down (or restarting) while a terminal was
    /// attached; cci let go so it can finish.
    #[error("the Incus daemon is shutting down or restarting")]
    ShuttingDown,
    /// The object asked for does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The name is already in use, or the object changed under us (ETag mismatch).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The operation needs the instance stopped.
    #[error("instance is running: {0}")]
    InstanceRunning(String),
    /// The operation needs the instance running.
    #[error("instance is not running: {0}")]
    InstanceNotRunning(String),
    /// The daemon refused the request for lack of rights.
    #[error("permission denied by the Incus daemon: {0}")]
    Forbidden(String),
    /// The daemon rejected the request as invalid (bad name, bad config...).
    #[error("invalid request: {0}")]
    BadRequest(String),
    /// A wait ran out of time; the operation may still be running.
    #[error("timed out after {seconds}s waiting for {what}")]
    Timeout {
        /// What was being waited for.
        what: String,
        /// How long we waited.
        seconds: u64,
    },
    /// Any other error the daemon reported.
    #[error("Incus error ({status}): {message}")]
    Daemon {
        /// The HTTP-like status code the daemon gave.
        status: u16,
        /// The daemon's message.
        message: String,
    },
    /// The daemon answered something we could not understand.
    #[error("unexpected answer from the Incus daemon: {0}")]
    Protocol(String),
    /// Local I/O failed (reading a file to upload, writing a pulled file...).
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Classify a daemon error from its status code and message.
    pub fn from_daemon(status: u16, message: String) -> Self {
        let lower = message.to_ascii_lowercase();
        match status {
            404 => Error::NotFound(message),
            409 => Error::Conflict(message),
            403 => Error::Forbidden(message),
            412 => Error::Conflict(message),
            _ if lower.contains("already exists")
                || lower.contains("unique constraint")
                || lower.contains("is busy running") =>
            {
                Error::Conflict(message)
            }
            _ if lower.contains("not running") => Error::InstanceNotRunning(message),
            _ if lower.contains("is running") || lower.contains("currently running") => {
                Error::InstanceRunning(message)
            }
            _ if lower.contains("not found") => Error::NotFound(message),
            400 => Error::BadRequest(message),
            _ => Error::Daemon { status, message },
        }
    }

    /// Wrap a local I/O error with what we were doing.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// True when the daemon is away for a while rather than refusing:
    /// gone, restarting, shutting down, or too slow to answer.
    pub fn is_daemon_away(&self) -> bool {
        matches!(
            self,
            Error::Unreachable { .. }
                | Error::RemoteUnreachable { .. }
                | Error::ShuttingDown
                | Error::Timeout { .. }
                | Error::Daemon { status: 503, .. }
        )
    }

    /// True when the object asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound(_))
    }

    /// True when the daemon lost track of a command it started (the command
    /// may well have run): "Failed to retrieve PID of executing child
    /// process", or, the same fault read as garbage, "Invalid PID '...'".
    pub fn is_attach_failure(&self) -> bool {
        matches!(self, Error::Daemon { message, .. }
            if message.contains("Failed to retrieve PID") || message.contains("Invalid PID"))
    }

    /// True when the name is taken (or the object changed under us).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_daemon_errors() {
        assert!(Error::from_daemon(404, "Instance not found".into()).is_not_found());
        assert!(Error::from_daemon(409, "x".into()).is_conflict());
        assert!(Error::from_daemon(400, "Instance \"a\" already exists".into()).is_conflict());
        assert!(
            Error::from_daemon(500, "UNIQUE constraint failed: instances.name".into())
                .is_conflict()
        );
        assert!(
            Error::from_daemon(
                500,
                "Failed creating instance record: Instance is busy running a \"start\" operation"
                    .into()
            )
            .is_conflict()
        );
        assert!(matches!(
            Error::from_daemon(
                400,
                "The instance is currently running, stop it first".into()
            ),
            Error::InstanceRunning(_)
        ));
        assert!(matches!(
            Error::from_daemon(400, "Instance is not running".into()),
            Error::InstanceNotRunning(_)
        ));
        assert!(matches!(
            Error::from_daemon(400, "Invalid instance name".into()),
            Error::BadRequest(_)
        ));
        assert!(matches!(
            Error::from_daemon(500, "boom".into()),
            Error::Daemon { status: 500, .. }
        ));
        // The daemon losing track of a command it started, in both forms.
        assert!(
            Error::from_daemon(
                500,
                "Failed to retrieve PID of executing child process".into()
            )
            .is_attach_failure()
        );
        assert!(Error::from_daemon(500, "Invalid PID '\u{fffd}'".into()).is_attach_failure());
        assert!(!Error::from_daemon(500, "boom".into()).is_attach_failure());
    }
}
