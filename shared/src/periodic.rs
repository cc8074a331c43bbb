//! Background rounds on a fixed period: lease keeping, retention, garbage collection. One
//! loop for all of them, so they agree on what a late round does (it runs once, then the
//! period starts again: no burst of catch-up rounds after a stall) and on stopping (at the
//! next round boundary once `shutdown` fires; a round in progress finishes).

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Runs `round` every `interval` (the first at once) until `shutdown`.
pub async fn run_every<F, Fut>(interval: Duration, shutdown: &CancellationToken, mut round: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        round().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn rounds_repeat_until_shutdown_and_none_starts_after_it() {
        let rounds = Arc::new(AtomicU32::new(0));
        let shutdown = CancellationToken::new();
        let (third, third_rx) = tokio::sync::oneshot::channel();
        let mut third = Some(third);
        let task = tokio::spawn({
            let (rounds, shutdown) = (rounds.clone(), shutdown.clone());
            async move {
                run_every(Duration::from_millis(5), &shutdown, || {
                    if rounds.fetch_add(1, Ordering::SeqCst) == 2
                        && let Some(tx) = third.take()
                    {
                        let _ = tx.send(());
                    }
                    async {}
                })
                .await
            }
        });
        tokio::time::timeout(Duration::from_secs(10), third_rx)
            .await
            .expect("three rounds ran")
            .expect("sender kept");
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the loop stopped")
            .expect("no panic");
        let after = rounds.load(Ordering::SeqCst);
        assert!(after >= 3);
        // Stopped for good: the count no longer moves.
        tokio::task::yield_now().await;
        assert_eq!(rounds.load(Ordering::SeqCst), after);
    }
}
