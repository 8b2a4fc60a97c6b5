//! Background operations: fetch, wait (with a timeout), cancel.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;

use super::Client;
use super::error::{Error, Result};
use super::wire::{StringMap, encode};

/// An operation as the daemon describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct Operation {
    /// The operation's UUID.
    pub id: String,
    /// `task`, `websocket` or `token`.
    #[serde(default)]
    pub class: String,
    /// `Running`, `Success`, `Failure`, `Cancelled`...
    #[serde(default)]
    pub status: String,
    /// The numeric status (200 success, 400 failure, 401 cancelled, 103 running).
    #[serde(default)]
    pub status_code: u16,
    /// Result data: exec file descriptors and exit code, image fingerprint...
    #[serde(default)]
    pub metadata: Option<Value>,
    /// The error message of a failed operation.
    #[serde(default)]
    pub err: String,
    /// Whether the operation can be cancelled.
    #[serde(default)]
    pub may_cancel: bool,
}

impl Operation {
    /// True once the operation has ended, however it ended.
    pub fn is_done(&self) -> bool {
        self.status_code >= 200
    }

    /// A string field of the result metadata.
    pub fn metadata_str(&self, key: &str) -> Option<&str> {
        self.metadata.as_ref()?.get(key)?.as_str()
    }

    /// The websocket secrets of an exec operation (`0`, `1`, `2`, `control`).
    pub fn fds(&self) -> StringMap {
        self.metadata
            .as_ref()
            .and_then(|m| m.get("fds"))
            .and_then(|f| serde_json::from_value(f.clone()).ok())
            .unwrap_or_default()
    }

    /// Turn a finished operation into `Ok` or the error it failed with.
    pub fn into_result(self) -> Result<Operation> {
        match self.status_code {
            200 => Ok(self),
            401 => Err(Error::Daemon {
                status: 401,
                message: format!("operation {} was cancelled", self.id),
            }),
            code if code >= 400 => Err(Error::from_daemon(code, self.err)),
            _ => Ok(self),
        }
    }
}

/// Longest single server-side wait; longer waits are several of these.
const WAIT_CHUNK: Duration = Duration::from_secs(30);

impl Client {
    /// The current state of an operation.
    pub async fn operation(&self, id: &str) -> Result<Operation> {
        self.transport
            .get(&format!("/1.0/operations/{}", encode(id)))
            .await
    }

    /// Wait for an operation to end and return it (still `Ok` when it failed: see
    /// [`Operation::into_result`]). `None` waits for ever.
    pub async fn wait_operation_raw(
        &self,
        id: &str,
        timeout: Option<Duration>,
    ) -> Result<Operation> {
        let start = Instant::now();
        loop {
            let left = match timeout {
                Some(t) => t.saturating_sub(start.elapsed()),
                None => WAIT_CHUNK,
            };
            if left.is_zero() {
                return Err(Error::Timeout {
                    what: format!("operation {id}"),
                    seconds: timeout.map_or(0, |t| t.as_secs()),
                });
            }
            let secs = left.min(WAIT_CHUNK).as_secs().max(1);
            let path = format!("/1.0/operations/{}/wait?timeout={secs}", encode(id));
            match self.transport.get::<Operation>(&path).await {
                Ok(op) if op.is_done() => return Ok(op),
                Ok(_) => {}
                // The daemon answers 500/504 "context deadline exceeded" while it runs.
                Err(Error::Daemon { message, .. }) if message.contains("deadline exceeded") => {}
                Err(e) => return Err(e),
            }
            if timeout.is_some_and(|t| start.elapsed() >= t) {
                return Err(Error::Timeout {
                    what: format!("operation {id}"),
                    seconds: timeout.map_or(0, |t| t.as_secs()),
                });
            }
        }
    }

    /// Wait for an operation and fail with its error if it failed.
    pub async fn wait_operation(&self, id: &str, timeout: Option<Duration>) -> Result<Operation> {
        self.wait_operation_raw(id, timeout).await?.into_result()
    }

    /// Ask the daemon to cancel an operation.
    pub async fn cancel_operation(&self, id: &str) -> Result<()> {
        let path = format!("/1.0/operations/{}", encode(id));
        self.transport
            .sync_unit(self.transport.request(Method::DELETE, &path))
            .await
    }
}
