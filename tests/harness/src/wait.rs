//! Polling a condition within a deadline: the only way the harness waits for something.

use std::future::Future;
use std::time::Duration;

use anyhow::bail;
use tokio::time::Instant;

/// Polls `f` every `interval` until it returns `Some`, and returns that value.
///
/// `f` is always called at least once, and once more at the deadline. Fails with a message
/// naming `what` when `deadline` passes first.
pub async fn wait_until<T, F, Fut>(
    what: &str,
    deadline: Duration,
    interval: Duration,
    mut f: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(value) = f().await {
            return Ok(value);
        }
        if Instant::now() >= end {
            bail!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep_until((Instant::now() + interval).min(end)).await;
    }
}

/// Like [`wait_until`], for a fallible check: retries while `f` fails and includes the last
/// error in the message when the deadline passes.
pub async fn wait_until_ok<T, F, Fut>(
    what: &str,
    deadline: Duration,
    interval: Duration,
    mut f: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        let err = match f().await {
            Ok(value) => return Ok(value),
            Err(err) => err,
        };
        if Instant::now() >= end {
            return Err(err.context(format!("timed out after {deadline:?} waiting for {what}")));
        }
        tokio::time::sleep_until((Instant::now() + interval).min(end)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn returns_value_once_ready() {
        let calls = AtomicU32::new(0);
        let got = wait_until(
            "third call",
            Duration::from_secs(5),
            Duration::from_millis(1),
            || {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                async move { (n == 3).then_some(n) }
            },
        )
        .await
        .unwrap();
        assert_eq!(got, 3);
    }

    #[tokio::test]
    async fn deadline_error_names_what() {
        let err = wait_until::<(), _, _>(
            "the impossible",
            Duration::from_millis(30),
            Duration::from_millis(5),
            || async { None },
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("the impossible"), "{err}");
    }

    #[tokio::test]
    async fn ok_variant_keeps_last_error() {
        let err = wait_until_ok::<(), _, _>(
            "never ok",
            Duration::from_millis(30),
            Duration::from_millis(5),
            || async { Err(anyhow::anyhow!("still broken")) },
        )
        .await
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("never ok") && text.contains("still broken"),
            "{text}"
        );
    }
}
