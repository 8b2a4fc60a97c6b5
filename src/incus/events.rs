//! The events websocket: lifecycle and operation events as they happen.

use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use super::Client;
use super::error::{Error, Result};
use super::transport::{WebSocket, encode};

/// One event.
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    /// `lifecycle`, `operation` or `logging`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When it happened (RFC 3339).
    #[serde(default)]
    pub timestamp: String,
    /// The event's body: for lifecycle events `action` and `source`.
    #[serde(default)]
    pub metadata: Value,
}

impl Event {
    /// For a lifecycle event, its action (e.g. `instance-started`).
    pub fn action(&self) -> Option<&str> {
        self.metadata.get("action")?.as_str()
    }

    /// For a lifecycle event, the API path of the object (e.g. `/1.0/instances/x`).
    pub fn source(&self) -> Option<&str> {
        self.metadata.get("source")?.as_str()
    }
}

/// A live stream of events.
pub struct Events {
    ws: WebSocket,
}

impl Events {
    /// The next event; `None` when the daemon closed the stream.
    pub async fn next(&mut self) -> Option<Result<Event>> {
        while let Some(msg) = self.ws.next().await {
            let text = match msg {
                Ok(Message::Text(t)) => t.to_string(),
                Ok(Message::Binary(b)) => String::from_utf8_lossy(&b).into_owned(),
                Ok(Message::Close(_)) => return None,
                Ok(_) => continue,
                Err(e) => return Some(Err(Error::Protocol(format!("events stream: {e}")))),
            };
            return Some(
                serde_json::from_str(&text)
                    .map_err(|e| Error::Protocol(format!("decoding an event: {e}"))),
            );
        }
        None
    }
}

impl Client {
    /// Subscribe to events of the given types (`lifecycle`, `operation`, `logging`).
    pub async fn events(&self, types: &[&str]) -> Result<Events> {
        let path = format!("/1.0/events?type={}", encode(&types.join(",")));
        Ok(Events {
            ws: self.transport.websocket(&path).await?,
        })
    }
}
