//! The task pool of a replica: slots to run tasks in, and places for the messages it holds.
//!
//! A task runs in one of `concurrency` *slots*. Every message the replica holds, from the
//! pull request that asks for it until it is settled, has a *place*; there are
//! [`PLACES_PER_SLOT`] places per slot (its running message and four waiting ones), which
//! bounds how many messages one replica keeps from the others.
//!
//! No head-of-line blocking: a task that has to wait for a release another task holds
//! gives its slot back while it waits ([`Place::lend_slot`]) and keeps only its place (its
//! message stays alive through in-progress acks), so a burst of events on one release does
//! not stop the replica's other releases. Once it holds the release it takes a slot again
//! ([`Place::take_slot`]), with its lease kept fresh meanwhile. Such a task must not wait
//! long for its slot, so tasks come first:
//! - a slot that is given back goes to the task that has waited longest for one, and only
//!   when no task waits is it free for the scheduler's next pull;
//! - a pull request sets slots aside (reserves them) for the messages it asked for and
//!   would keep them until it expires, so a task that finds no free slot takes a reserved
//!   one. A message the pull then receives without a slot waits for one like any task:
//!   it has its place, and the places are what bound the messages held.
//!
//! Running tasks never wait for a release while they hold a slot (they lend it), so the
//! slots always go round: a task that holds a release and waits for a slot gets the next
//! one a running task gives back.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus::IntGauge;
use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// Places per slot: its running message and four waiting without a slot (for busy
/// releases); when all are taken the replica pulls no more.
pub const PLACES_PER_SLOT: usize = 5;

/// The slots and places of a replica. Shared by the scheduler, its pulls and the tasks.
pub struct Pool {
    concurrency: usize,
    state: Mutex<State>,
    /// Tells the scheduler a slot became free for pulls.
    freed: Notify,
    /// One permit per place.
    places: Arc<Semaphore>,
    /// Messages held without a slot (waiting for a release, or for a slot).
    waiting: IntGauge,
}

struct State {
    /// Slots nobody holds, reserves or waits for.
    free: usize,
    /// Slots reserved by open pull requests, by pull (a handful at most).
    reserved: Vec<(u64, usize)>,
    next_pull: u64,
    /// Tasks waiting for a slot, longest first.
    wanted: VecDeque<oneshot::Sender<()>>,
}

impl State {
    /// A slot given back: handed to the task that has waited longest for one, else free.
    /// True when it became free (the scheduler may pull for it).
    fn give_back(&mut self) -> bool {
        while let Some(waiter) = self.wanted.pop_front() {
            // Fails only when the waiter stopped waiting: the next one gets it.
            if waiter.send(()).is_ok() {
                return false;
            }
        }
        self.free += 1;
        true
    }

    /// A slot for a task: a free one, else one an open pull reserved.
    fn take_for_task(&mut self) -> bool {
        if self.free > 0 {
            self.free -= 1;
            return true;
        }
        match self.reserved.iter_mut().find(|(_, count)| *count > 0) {
            Some((_, count)) => {
                *count -= 1;
                true
            }
            None => false,
        }
    }

    fn reserved_by(&mut self, pull: u64) -> Option<&mut usize> {
        self.reserved
            .iter_mut()
            .find(|(id, _)| *id == pull)
            .map(|(_, count)| count)
    }
}

impl Pool {
    pub fn new(concurrency: usize, waiting: IntGauge) -> Arc<Pool> {
        Arc::new(Pool {
            concurrency,
            state: Mutex::new(State {
                free: concurrency,
                reserved: Vec::new(),
                next_pull: 0,
                wanted: VecDeque::new(),
            }),
            freed: Notify::new(),
            places: Arc::new(Semaphore::new(concurrency * PLACES_PER_SLOT)),
            waiting,
        })
    }

    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is only counted in short sections that cannot panic halfway.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Gives a slot back (see [`State::give_back`]).
    fn give_back(&self, slots: usize) {
        let mut state = self.state();
        let mut freed = false;
        for _ in 0..slots {
            freed |= state.give_back();
        }
        drop(state);
        if freed {
            self.freed.notify_one();
        }
    }

    /// Waits for a place and a free slot for the scheduler's next pull request.
    pub async fn reserve(self: &Arc<Self>) -> Reservation {
        let place = self
            .places
            .clone()
            .acquire_owned()
            .await
            .expect("the places are never closed");
        let mut reservation = self.open_reservation();
        // A slot freed between the look and the wait is not missed: with nobody waiting,
        // the notification is kept for the next wait.
        while !reservation.reserve_slot() {
            self.freed.notified().await;
        }
        reservation.places.push(place);
        reservation
    }

    /// Resolves when a slot may have become free for pulls.
    pub async fn slot_freed(&self) {
        self.freed.notified().await;
    }

    fn open_reservation(self: &Arc<Self>) -> Reservation {
        let mut state = self.state();
        let id = state.next_pull;
        state.next_pull += 1;
        state.reserved.push((id, 0));
        drop(state);
        Reservation {
            pool: self.clone(),
            id,
            places: Vec::new(),
        }
    }

    /// A slot for a task, before the scheduler's pulls: free or reserved at once, else the
    /// next one given back to the pool. Cancel-safe.
    async fn take_slot(self: &Arc<Self>) -> Slot {
        loop {
            let receiver = {
                let mut state = self.state();
                if state.take_for_task() {
                    return Slot { pool: self.clone() };
                }
                let (sender, receiver) = oneshot::channel();
                state.wanted.push_back(sender);
                receiver
            };
            let mut waiter = SlotWaiter {
                pool: self.clone(),
                receiver: Some(receiver),
            };
            if let Some(slot) = waiter.wait().await {
                return slot;
            }
        }
    }
}

/// A task's turn in [`State::wanted`]. Dropped before its slot came (the task stopped
/// waiting), it gives back a slot handed to it meanwhile.
struct SlotWaiter {
    pool: Arc<Pool>,
    receiver: Option<oneshot::Receiver<()>>,
}

impl SlotWaiter {
    async fn wait(&mut self) -> Option<Slot> {
        let receiver = self.receiver.as_mut()?;
        let handed = receiver.await.is_ok();
        self.receiver = None;
        // Not handed one only if the pool dropped the turn, which it never does while
        // the waiter holds it; then the caller queues again.
        handed.then(|| Slot {
            pool: self.pool.clone(),
        })
    }
}

impl Drop for SlotWaiter {
    fn drop(&mut self) {
        if let Some(mut receiver) = self.receiver.take() {
            receiver.close();
            if receiver.try_recv().is_ok() {
                self.pool.give_back(1);
            }
        }
    }
}

/// One slot, given back to the pool when dropped.
struct Slot {
    pool: Arc<Pool>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.pool.give_back(1);
    }
}

/// What one pull request may receive: a place per message asked for, and as many slots
/// reserved for them unless tasks took them meanwhile. Unused slots and places go back
/// when it is dropped.
pub struct Reservation {
    pool: Arc<Pool>,
    id: u64,
    places: Vec<OwnedSemaphorePermit>,
}

/// Why a reservation could not grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// Every place is taken: wait for messages to be settled.
    NoPlace,
    /// Every slot is busy, reserved or wanted by a task.
    NoSlot,
}

impl Reservation {
    /// Messages the pull may ask for.
    pub fn messages(&self) -> usize {
        self.places.len()
    }

    /// Adds one message: a free place and a free slot, when both are there.
    pub fn try_grow(&mut self) -> Result<(), Full> {
        let place = self
            .pool
            .places
            .clone()
            .try_acquire_owned()
            .map_err(|_| Full::NoPlace)?;
        if !self.reserve_slot() {
            return Err(Full::NoSlot);
        }
        self.places.push(place);
        Ok(())
    }

    /// Reserves a free slot; never one a task waits for (there is none free then).
    fn reserve_slot(&mut self) -> bool {
        let mut state = self.pool.state();
        if state.free == 0 {
            return false;
        }
        state.free -= 1;
        if let Some(count) = state.reserved_by(self.id) {
            *count += 1;
        }
        true
    }

    /// A message received: its place, with one of the reserved slots unless tasks took
    /// them all. `None` when the server sent more than asked for.
    pub fn take(&mut self) -> Option<Place> {
        let place = self.places.pop()?;
        let slot = {
            let mut state = self.pool.state();
            state
                .reserved_by(self.id)
                .filter(|count| **count > 0)
                .map(|count| *count -= 1)
                .is_some()
        };
        let slot = slot.then(|| Slot {
            pool: self.pool.clone(),
        });
        if slot.is_none() {
            self.pool.waiting.inc();
        }
        Some(Place {
            pool: self.pool.clone(),
            slot: Mutex::new(slot),
            _place: place,
        })
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let unused = {
            let mut state = self.pool.state();
            let at = state.reserved.iter().position(|(id, _)| *id == self.id);
            at.map_or(0, |at| state.reserved.swap_remove(at).1)
        };
        self.pool.give_back(unused);
    }
}

/// The task was stopped (shutdown's grace period is over) before a slot came.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("stopped while waiting for a task slot")]
pub struct Stopped;

/// A message's place in the pool, until it is settled: with a slot while it runs, without
/// one while it waits.
pub struct Place {
    pool: Arc<Pool>,
    slot: Mutex<Option<Slot>>,
    _place: OwnedSemaphorePermit,
}

impl Place {
    fn slot(&self) -> MutexGuard<'_, Option<Slot>> {
        self.slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Gives the slot to other messages while this one waits for a release another task
    /// holds. Nothing when it has none.
    pub fn lend_slot(&self) {
        let lent = self.slot().take();
        if lent.is_some() {
            self.pool.waiting.inc();
        }
        // Dropped here, outside the lock: it goes to the longest-waiting task, or is freed.
        drop(lent);
    }

    /// Takes a slot again after [`Place::lend_slot`] (or gets one for a message received
    /// without), before any pull; at once when it has one. Fails when `stop` fires first.
    pub async fn take_slot(&self, stop: &CancellationToken) -> Result<(), Stopped> {
        if self.slot().is_some() {
            return Ok(());
        }
        let slot = tokio::select! {
            biased;
            () = stop.cancelled() => return Err(Stopped),
            slot = self.pool.take_slot() => slot,
        };
        let mut held = self.slot();
        if held.is_none() {
            *held = Some(slot);
            self.pool.waiting.dec();
        }
        Ok(())
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if self.slot().is_none() {
            self.pool.waiting.dec();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::FutureExt;

    use super::*;

    const SOON: Duration = Duration::from_secs(5);

    fn pool(concurrency: usize) -> Arc<Pool> {
        Pool::new(
            concurrency,
            IntGauge::new("waiting", "waiting").expect("gauge"),
        )
    }

    fn free(pool: &Pool) -> usize {
        pool.state().free
    }

    /// A message received with a slot, as by a pull request of one.
    async fn received(pool: &Arc<Pool>) -> Place {
        let mut reservation = tokio::time::timeout(SOON, pool.reserve())
            .await
            .expect("a place and a slot");
        reservation.take().expect("one place")
    }

    /// A message waiting for a slot, as one received by a pull whose slot a task took.
    fn received_without_slot(pool: &Arc<Pool>) -> Place {
        pool.waiting.inc();
        Place {
            pool: pool.clone(),
            slot: Mutex::new(None),
            _place: pool
                .places
                .clone()
                .try_acquire_owned()
                .expect("a free place"),
        }
    }

    /// Whether `place` gets a slot right now.
    fn slot_at_once(place: &Place) -> bool {
        let stop = CancellationToken::new();
        match place.take_slot(&stop).now_or_never() {
            Some(taken) => taken.is_ok(),
            None => false,
        }
    }

    #[tokio::test]
    async fn a_lent_slot_serves_another_message_and_comes_back_before_any_pull() {
        let pool = pool(1);
        let running = received(&pool).await;
        {
            let pull = pool.reserve();
            tokio::pin!(pull);
            assert!(futures::poll!(&mut pull).is_pending(), "one slot only");
        }
        // Waiting for a release another task holds: the slot serves another message.
        running.lend_slot();
        assert_eq!(pool.waiting.get(), 1);
        let other = received(&pool).await;
        let stop = CancellationToken::new();
        {
            let back = running.take_slot(&stop);
            let pull = pool.reserve();
            tokio::pin!(back, pull);
            assert!(futures::poll!(&mut back).is_pending());
            assert!(futures::poll!(&mut pull).is_pending());
            drop(other);
            assert!(futures::poll!(&mut back).is_ready(), "handed to the task");
            assert!(
                futures::poll!(&mut pull).is_pending(),
                "not freed for pulls"
            );
        }
        assert_eq!(pool.waiting.get(), 0);
        drop(running);
        received(&pool).await;
    }

    #[tokio::test]
    async fn a_task_takes_a_slot_an_idle_pull_reserved_and_the_pulls_message_waits() {
        let pool = pool(2);
        let mut first = pool.reserve().await;
        first.try_grow().expect("a second slot");
        let task = first.take().expect("a message");
        drop(first);
        task.lend_slot();
        // An idle pull holds both slots, the lent one too.
        let mut idle = pool.reserve().await;
        idle.try_grow().expect("the lent slot");
        assert_eq!(free(&pool), 0);
        assert!(slot_at_once(&task), "taken from the pull");
        // Of the pull's messages one has a slot, the other its place only...
        let early = idle.take().expect("a place");
        let late = idle.take().expect("a place");
        assert!(slot_at_once(&early));
        assert_eq!(pool.waiting.get(), 1);
        // ...and gets one as soon as one is given back.
        assert!(!slot_at_once(&late));
        drop(task);
        assert!(slot_at_once(&late));
        assert_eq!(pool.waiting.get(), 0);
        drop((early, late, idle));
        assert_eq!(free(&pool), 2, "every slot back");
    }

    #[tokio::test]
    async fn waiting_tasks_get_slots_in_turn_before_pulls() {
        let pool = pool(1);
        let running = received(&pool).await;
        let stop = CancellationToken::new();
        let a = received_without_slot(&pool);
        let b = received_without_slot(&pool);
        {
            let a_back = a.take_slot(&stop);
            let b_back = b.take_slot(&stop);
            let pull = pool.reserve();
            tokio::pin!(a_back, b_back, pull);
            // All three wait, a first.
            assert!(futures::poll!(&mut a_back).is_pending());
            assert!(futures::poll!(&mut b_back).is_pending());
            assert!(futures::poll!(&mut pull).is_pending());
            drop(running);
            assert!(futures::poll!(&mut a_back).is_ready(), "a waited longest");
            assert!(futures::poll!(&mut b_back).is_pending());
            assert!(futures::poll!(&mut pull).is_pending(), "tasks before pulls");
        }
        drop(a);
        assert!(slot_at_once(&b));
        drop(b);
        tokio::time::timeout(SOON, pool.reserve())
            .await
            .expect("free for pulls at last");
    }

    #[tokio::test]
    async fn a_task_that_stops_waiting_leaves_no_slot_behind() {
        let pool = pool(1);
        let running = received(&pool).await;
        let waiter = received_without_slot(&pool);
        let stop = CancellationToken::new();
        {
            let back = waiter.take_slot(&stop);
            tokio::pin!(back);
            assert!(futures::poll!(&mut back).is_pending());
            // Handed the slot, then dropped before it looked: the slot goes back.
            drop(running);
        }
        assert_eq!(free(&pool), 1);
        let running = received(&pool).await;
        stop.cancel();
        assert!(matches!(waiter.take_slot(&stop).await, Err(Stopped)));
        drop((running, waiter));
        assert_eq!(free(&pool), 1);
        assert_eq!(pool.waiting.get(), 0);
    }

    #[tokio::test]
    async fn places_bound_the_messages_held() {
        let pool = pool(1);
        let mut held = Vec::new();
        for _ in 0..PLACES_PER_SLOT {
            let place = received(&pool).await;
            place.lend_slot();
            held.push(place);
        }
        assert_eq!(free(&pool), 1, "the slot is free...");
        let pull = pool.reserve();
        tokio::pin!(pull);
        assert!(
            futures::poll!(&mut pull).is_pending(),
            "...but every place is taken"
        );
        held.pop();
        tokio::time::timeout(SOON, pull)
            .await
            .expect("a place again");
    }
}
