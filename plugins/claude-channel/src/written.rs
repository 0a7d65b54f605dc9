//! Watches what goes to Claude Code, so that the ledger knows when a tool call's result is on its way:
//! rmcp writes it after the handler returned, and a notification sent in between could overtake it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::io::AsyncWrite;

use crate::ledger::Ledger;

pin_project! {
    /// Claude Code's end of the MCP stream (newline-delimited JSON-RPC), telling the ledger about each
    /// response as it is written.
    #[derive(Debug)]
    pub(crate) struct WatchedWriter<W> {
        #[pin]
        inner: W,
        line: Vec<u8>,
        ledger: Ledger,
    }
}

impl<W> WatchedWriter<W> {
    pub(crate) fn new(inner: W, ledger: Ledger) -> Self {
        Self {
            inner,
            line: Vec::new(),
            ledger,
        }
    }
}

/// Notes the responses among `bytes`, which were just written after `line`.
fn observe(line: &mut Vec<u8>, bytes: &[u8], ledger: &Ledger) {
    let mut rest = bytes;
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        line.extend_from_slice(&rest[..end]);
        if let Ok(message) = serde_json::from_slice::<serde_json::Value>(line)
            && message.get("method").is_none()
            && let Some(id) = message.get("id")
        {
            ledger.written(id);
        }
        line.clear();
        rest = &rest[end + 1..];
    }
    line.extend_from_slice(rest);
}

impl<W: AsyncWrite> AsyncWrite for WatchedWriter<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let written = ready!(this.inner.poll_write(cx, buf))?;
        observe(this.line, &buf[..written], this.ledger);
        Poll::Ready(Ok(written))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_response_written_in_pieces_ends_its_call() {
        let ledger = Ledger::default();
        drop(ledger.tool_call(4.into()));
        let mut line = Vec::new();
        observe(
            &mut line,
            br#"{"jsonrpc":"2.0","method":"notifications/x","id":4}"#,
            &ledger,
        );
        observe(&mut line, b"\n{\"jsonrpc\":\"2.0\",\"id\":4,", &ledger);
        let waiting = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            ledger.wait_until_no_tool_call(),
        );
        assert!(waiting.await.is_err(), "only a notification was written");
        observe(&mut line, b"\"result\":{}}\n", &ledger);
        ledger.wait_until_no_tool_call().await;
    }
}
