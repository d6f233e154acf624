//! A minimal HTTP/1.1 GET over plain TCP, for `/readyz`.

use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The status code of `GET <path>` on `127.0.0.1:<port>`.
pub async fn get_status(port: u16, path: &str) -> anyhow::Result<u16> {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .context("HTTP request timed out")?
        .with_context(|| format!("GET {path} on port {port}"))?;
    let text = String::from_utf8_lossy(&response);
    let status_line = text.lines().next().unwrap_or_default();
    match status_line.split_whitespace().nth(1).map(str::parse::<u16>) {
        Some(Ok(code)) => Ok(code),
        _ => bail!("unreadable HTTP status line {status_line:?}"),
    }
}
