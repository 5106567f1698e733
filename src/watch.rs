//! The error policy of watch streams: an expired watch (`410 Gone`) relists at once, and only
//! real failures back off, with kube-runtime's [`DefaultBackoff`]. Generic over the watched
//! kind, for controllers and plain reflectors alike.
//!
//! Expiry is routine: a watch ends every `timeoutSeconds` and resumes from its last
//! resourceVersion, and once that is compacted the API server answers with HTTP 200 and one
//! `ERROR` event whose `Status` has code 410 (k8s.io/apiserver pkg/storage/cacher/cacher.go,
//! `Cacher.Watch` → `newErrWatcher`). kube-runtime's watcher yields it as
//! [`watcher::Error::WatchError`] and is then already back in its `Empty` state, so its next
//! poll relists (kube-runtime watcher.rs, `step_trampolined`, `State::Watching`). A paged list
//! whose continue token expired is a 410 as well (k8s.io/apiserver pkg/storage/etcd3/errors.go,
//! `continueExpired`), yielded as [`watcher::Error::InitialListFailed`], after which the watcher
//! lists again from the first page (same function, `State::InitPage`).
//!
//! kube's `default_backoff` pauses after every error, expiries too, and resets on any item, also
//! the watcher's own `Init` marker, so repeated failures never pause longer than its first step.
//! A `Controller`'s trigger backoff is shared by all its watches and reset only by an object:
//! watches that started together expire together, and their pauses add up to many seconds.
//! [`backoff_on_failures`] passes every item on, pauses only after a failure, and resets only
//! once something was listed or watched; an expiry right after another one, with nothing listed
//! in between, counts as a failure, so that a server answering every list with 410 is not asked
//! in a tight loop.

use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt as _};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, DefaultBackoff, Event};

/// The longest pause, should the backoff ever give up (the default one never does).
const MAX_PAUSE: Duration = Duration::from_secs(30);

/// `events` (a kube [`watcher()`](kube::runtime::watcher())) with the policy of this module:
/// every item is passed on; after a failure (logged with its retry delay) the next poll waits
/// for the backoff; after a 410 it does not wait.
pub fn backoff_on_failures<K, S>(
    events: S,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static
where
    K: Send + 'static,
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
{
    let policy = Policy {
        events: Box::pin(events),
        backoff: DefaultBackoff::default(),
        pause: None,
        expired_without_progress: false,
    };
    futures::stream::unfold(policy, |mut policy| async move {
        if let Some(pause) = policy.pause.take() {
            tokio::time::sleep(pause).await;
        }
        let item = policy.events.next().await?;
        policy.observe(&item);
        Some((item, policy))
    })
}

struct Policy<S> {
    events: Pin<Box<S>>,
    backoff: DefaultBackoff,
    /// How long to wait before the next poll.
    pause: Option<Duration>,
    expired_without_progress: bool,
}

impl<S> Policy<S> {
    fn observe<K>(&mut self, item: &Result<Event<K>, watcher::Error>) {
        match item {
            Err(error) if is_expiry(error) && !self.expired_without_progress => {
                self.expired_without_progress = true;
                tracing::debug!(%error, "watch expired; relisting");
            }
            Err(error) => {
                let pause = self.backoff.next().unwrap_or(MAX_PAUSE);
                tracing::warn!(%error, retry_in = ?pause, "watch failed");
                self.pause = Some(pause);
            }
            // The watcher's own marker before it lists: nothing was asked of the server yet.
            Ok(Event::Init) => {}
            Ok(_) => {
                self.backoff.reset();
                self.expired_without_progress = false;
            }
        }
    }
}

/// A 410 after which the watcher relists by itself (see the module documentation). A 410 that
/// starts a watch (`WatchStartFailed`) is not: the watcher would resume from the same
/// resourceVersion again, so it backs off like any failure.
fn is_expiry(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::WatchError(status) => status.code == 410,
        watcher::Error::InitialListFailed(kube::Error::Api(status)) => status.code == 410,
        _ => false,
    }
}

/// A trigger backoff for kube's `Controller` whose streams each went through
/// [`backoff_on_failures`]: they already paused after their own failures, and the controller's
/// backoff would pause all of them for one stream's error.
pub struct NoPause;

impl Iterator for NoPause {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(Duration::ZERO)
    }
}

impl Backoff for NoPause {
    fn reset(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    type Item = Result<Event<&'static str>, watcher::Error>;

    fn status(code: u16) -> Box<Status> {
        Box::new(Status {
            code,
            ..Status::default()
        })
    }

    fn gone() -> Item {
        Err(watcher::Error::WatchError(status(410)))
    }

    fn list_failed(code: u16) -> Item {
        Err(watcher::Error::InitialListFailed(kube::Error::Api(status(
            code,
        ))))
    }

    fn relisted() -> [Item; 3] {
        [
            Ok(Event::Init),
            Ok(Event::InitApply("mox")),
            Ok(Event::InitDone),
        ]
    }

    /// The pause before each item, in virtual time.
    async fn pauses(items: Vec<Item>) -> Vec<Duration> {
        tokio::time::pause();
        let mut stream = std::pin::pin!(backoff_on_failures(futures::stream::iter(items)));
        let mut pauses = Vec::new();
        loop {
            let before = tokio::time::Instant::now();
            if stream.next().await.is_none() {
                return pauses;
            }
            pauses.push(before.elapsed());
        }
    }

    #[tokio::test]
    async fn an_expired_watch_relists_without_a_pause_every_time() {
        let mut items = Vec::new();
        for _ in 0..5 {
            items.push(gone());
            items.extend(relisted());
        }
        let pauses = pauses(items).await;
        assert_eq!(pauses.len(), 20, "every item passed on");
        assert!(pauses.iter().all(Duration::is_zero), "{pauses:?}");
    }

    #[tokio::test]
    async fn an_expired_continue_token_relists_without_a_pause() {
        let mut items = vec![list_failed(410)];
        items.extend(relisted());
        assert!(pauses(items).await.iter().all(Duration::is_zero));
    }

    #[tokio::test]
    async fn failures_back_off_more_each_time_until_something_is_listed() {
        // The list fails (403) three times; the watcher's Init before each retry is no
        // progress, so the pause grows (0.8 s, 1.6 s, 3.2 s, each plus up to as much jitter).
        let items = vec![
            list_failed(403),
            Ok(Event::Init),
            list_failed(403),
            Ok(Event::Init),
            list_failed(403),
            Ok(Event::Init),
            Ok(Event::InitApply("mox")),
            Ok(Event::InitDone),
            list_failed(500),
            Ok(Event::Init),
        ];
        let pauses = pauses(items).await;
        let ms = |i: usize| pauses[i].as_millis();
        assert_eq!(ms(0), 0);
        assert!((800..=1600).contains(&ms(1)), "{pauses:?}");
        assert!((1600..=3200).contains(&ms(3)), "{pauses:?}");
        assert!((3200..=6400).contains(&ms(5)), "{pauses:?}");
        assert_eq!(ms(6), 0, "no pause after Init");
        assert_eq!(ms(8), 0);
        // Something was listed in between: the backoff starts over.
        assert!((800..=1600).contains(&ms(9)), "{pauses:?}");
        assert_eq!(pauses.len(), 10);
    }

    #[tokio::test]
    async fn an_expiry_right_after_another_one_backs_off() {
        // A server that answers every list with 410 is not asked in a tight loop.
        let items = vec![
            list_failed(410),
            Ok(Event::Init),
            list_failed(410),
            Ok(Event::Init),
        ];
        let pauses = pauses(items).await;
        assert!(pauses[..3].iter().all(Duration::is_zero), "{pauses:?}");
        assert!(pauses[3] >= Duration::from_millis(800), "{pauses:?}");
    }

    #[tokio::test]
    async fn a_410_when_starting_a_watch_backs_off() {
        let items = vec![
            Err(watcher::Error::WatchStartFailed(kube::Error::Api(status(
                410,
            )))),
            Ok(Event::InitDone),
        ];
        let pauses = pauses(items).await;
        assert!(pauses[1] >= Duration::from_millis(800), "{pauses:?}");
    }
}
