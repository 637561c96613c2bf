//! Fanning committed changes out to subscribers, without a thread per subscriber.
//!
//! Each subscriber has a slot: a bounded queue the writer appends to after every commit, never
//! blocking on it. A slot whose queue is full is marked overflowed and its queue dropped, so a
//! subscriber that stopped reading costs nothing more and learns, explicitly, that it missed
//! changes (it resumes from the change log, which holds them all). A subscriber waits for its
//! slot either blocking (a condition variable) or from async code (a waker), so one async task
//! per client is enough. When the store closes, every slot is closed.
//!
//! A slot holds any item type: the hub's carry [`Change`]s; the realtime fan-out
//! (access/realtime.rs) uses the same slots for what each subscriber is to receive, with a
//! mark saying how far its producer has looked.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::engine::change::Change;

/// The fan-out of one store.
#[derive(Debug, Default)]
pub(crate) struct Hub {
    slots: Mutex<Vec<Arc<Slot<Change>>>>,
}

/// One subscriber's queue.
#[derive(Debug)]
pub(crate) struct Slot<T> {
    state: Mutex<SlotState<T>>,
    ready: Condvar,
    /// Set when the subscriber is gone; the hub then forgets the slot.
    dropped: AtomicBool,
}

#[derive(Debug)]
struct SlotState<T> {
    queue: VecDeque<T>,
    capacity: usize,
    /// Set by the producer with each push: how far it has looked (a seq), whatever it queued.
    mark: u64,
    /// Threads blocked in [`Slot::wait`].
    sleepers: usize,
    overflowed: bool,
    /// Set by [`Slot::lapse`]: something committed that the queue does not hold.
    lapsed: bool,
    closed: bool,
    waker: Option<Waker>,
}

/// What a slot has for its subscriber.
#[derive(Debug, PartialEq)]
pub(crate) enum Delivery<T> {
    Item(T),
    /// The queue overflowed: changes were dropped here (they are in the log).
    Overflowed,
    /// Changes were committed that the slot was not given (see [`Hub::lapse`]): they are in
    /// the log.
    Lapsed,
    /// The store closed.
    Closed,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
    /// Tells every slot that changes committed which it was not given: a write decides when
    /// it begins whether to build [`Change`] values (only when someone listens), so a
    /// subscriber that registered while it ran gets this instead, and reads the log.
    pub(crate) fn lapse(&self) {
        for slot in lock(&self.slots).iter() {
            let mut state = lock(&slot.state);
            if !state.closed {
                state.lapsed = true;
                slot.wake(&mut state);
            }
        }
    }

    /// True when someone listens, so the writer knows whether to build [`Change`] values.
    pub(crate) fn has_subscribers(&self) -> bool {
        !lock(&self.slots).is_empty()
    }

    /// A new slot holding up to `capacity` changes, receiving everything committed from now.
    pub(crate) fn subscribe(&self, capacity: usize) -> Arc<Slot<Change>> {
        let slot = Slot::new(capacity);
        lock(&self.slots).push(slot.clone());
        slot
    }

    /// Called by the writer after a commit, with the group's changes in seq order. Never
    /// blocks on a subscriber.
    pub(crate) fn publish(&self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        let mut slots = lock(&self.slots);
        slots.retain(|slot| !slot.dropped.load(Ordering::Acquire));
        for slot in slots.iter() {
            slot.push(changes.iter().cloned(), 0);
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        for slot in lock(&self.slots).iter() {
            slot.close();
        }
    }
}

impl<T> Slot<T> {
    /// An empty slot holding up to `capacity` items.
    pub(crate) fn new(capacity: usize) -> Arc<Slot<T>> {
        Arc::new(Slot {
            state: Mutex::new(SlotState {
                queue: VecDeque::new(),
                capacity: capacity.max(1),
                mark: 0,
                sleepers: 0,
                overflowed: false,
                lapsed: false,
                closed: false,
                waker: None,
            }),
            ready: Condvar::new(),
            dropped: AtomicBool::new(false),
        })
    }

    /// Queues `items` (all or, when they do not fit, none: the slot overflows and drops what
    /// it held) and sets the mark; never blocks. A slot that overflowed takes nothing more
    /// until its subscriber has seen that ([`Slot::clear`]); false then.
    pub(crate) fn push(&self, items: impl ExactSizeIterator<Item = T>, mark: u64) -> bool {
        let mut state = lock(&self.state);
        if state.overflowed || state.closed {
            return false;
        }
        if items.len() > 0 {
            if state.queue.len() + items.len() > state.capacity {
                state.overflowed = true;
                state.queue = VecDeque::new();
            } else {
                state.queue.extend(items);
            }
            self.wake(&mut state);
        }
        state.mark = mark;
        !state.overflowed
    }

    /// True when the slot overflowed and its subscriber has not seen that yet.
    pub(crate) fn overflowed(&self) -> bool {
        lock(&self.state).overflowed
    }

    /// The producer's mark, when nothing is queued: everything up to it was looked at and
    /// delivered. `None` while items wait (or the slot overflowed).
    pub(crate) fn idle_mark(&self) -> Option<u64> {
        let state = lock(&self.state);
        (state.queue.is_empty() && !state.overflowed).then_some(state.mark)
    }

    /// Closes the slot: its subscriber gets what is queued, then [`Delivery::Closed`].
    pub(crate) fn close(&self) {
        let mut state = lock(&self.state);
        state.closed = true;
        self.wake(&mut state);
    }

    fn wake(&self, state: &mut SlotState<T>) {
        // The condition variable only when a thread waits on it: a notify costs a system
        // call, and most slots are read from async code (their waker below).
        if state.sleepers > 0 {
            self.ready.notify_all();
        }
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }

    fn take(state: &mut SlotState<T>) -> Option<Delivery<T>> {
        if state.lapsed {
            state.lapsed = false;
            return Some(Delivery::Lapsed);
        }
        if let Some(item) = state.queue.pop_front() {
            return Some(Delivery::Item(item));
        }
        if state.overflowed {
            state.overflowed = false;
            return Some(Delivery::Overflowed);
        }
        state.closed.then_some(Delivery::Closed)
    }

    /// The next delivery, waiting up to `timeout`; `None` when nothing came in time.
    pub(crate) fn wait(&self, timeout: Duration) -> Option<Delivery<T>> {
        let deadline = Instant::now() + timeout;
        let mut state = lock(&self.state);
        loop {
            if let Some(delivery) = Self::take(&mut state) {
                return Some(delivery);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            state.sleepers += 1;
            state = self.ready.wait_timeout(state, left).unwrap_or_else(|p| p.into_inner()).0;
            state.sleepers -= 1;
        }
    }

    /// The next delivery for async code: ready, or pending with `cx`'s waker registered.
    pub(crate) fn poll(&self, cx: &mut Context<'_>) -> Poll<Delivery<T>> {
        let mut state = lock(&self.state);
        match Self::take(&mut state) {
            Some(delivery) => Poll::Ready(delivery),
            None => {
                state.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Drops whatever is queued (the subscriber is about to read the log instead) and takes
    /// items again; the mark becomes `mark`.
    pub(crate) fn clear(&self, mark: u64) {
        let mut state = lock(&self.state);
        state.queue.clear();
        state.overflowed = false;
        state.mark = mark;
    }

    /// True once its subscriber is gone.
    pub(crate) fn is_released(&self) -> bool {
        self.dropped.load(Ordering::Acquire)
    }

    /// Tells the hub this slot's subscriber is gone.
    pub(crate) fn release(&self) {
        self.dropped.store(true, Ordering::Release);
    }
}

/// A reader that turns what its slot delivers into items of its own — the change feed, a
/// realtime watch — and waits for the slot the same way, blocking or from async code.
pub(crate) trait SlotReader {
    /// What the slot holds.
    type Delivered;
    /// What the reader gives out.
    type Item;

    fn slot(&self) -> &Slot<Self::Delivered>;

    /// The next item available without waiting, given what the slot just delivered (if
    /// anything); `Ok(None)` when there is none yet, or the reader has ended.
    fn step(&mut self, delivery: Option<Delivery<Self::Delivered>>) -> crate::error::Result<Option<Self::Item>>;

    fn ended(&self) -> bool;

    /// The next item, waiting up to `timeout` on this thread; `Ok(None)` when none came in
    /// time or the reader has ended.
    fn wait_item(&mut self, timeout: Duration) -> crate::error::Result<Option<Self::Item>> {
        let deadline = Instant::now() + timeout;
        let mut delivery = None;
        loop {
            if let Some(item) = self.step(delivery.take())? {
                return Ok(Some(item));
            }
            if self.ended() {
                return Ok(None);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.slot().wait(left) {
                Some(d) => delivery = Some(d),
                None => return Ok(None),
            }
        }
    }

    /// The next item for async code: ready (`None` once the reader has ended), or pending
    /// with `cx`'s waker registered with the slot.
    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<crate::error::Result<Self::Item>>> {
        let mut delivery = None;
        loop {
            match self.step(delivery.take()) {
                Ok(Some(item)) => return Poll::Ready(Some(Ok(item))),
                Ok(None) if self.ended() => return Poll::Ready(None),
                Ok(None) => {}
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
            match self.slot().poll(cx) {
                Poll::Ready(d) => delivery = Some(d),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::change::ChangeOp;
    use crate::engine::timestamp::Timestamp;

    fn change(seq: u64) -> Change {
        Change {
            seq: crate::engine::change::Seq(seq),
            collection: "c".into(),
            id: "i".into(),
            op: ChangeOp::Create,
            version: 1,
            actor: "t".into(),
            at: Timestamp(0),
            deleted: false,
            before: None,
            before_deleted: false,
            after: None,
            sealed: Vec::new(),
        }
    }

    #[test]
    fn a_full_slot_overflows_once_and_then_receives_again() {
        let hub = Hub::default();
        let slot = hub.subscribe(2);
        hub.publish(&[change(1), change(2)]);
        hub.publish(&[change(3)]);
        assert_eq!(slot.wait(Duration::ZERO), Some(Delivery::Overflowed), "the queue was dropped");
        assert_eq!(slot.wait(Duration::ZERO), None);
        hub.publish(&[change(4)]);
        assert_eq!(slot.wait(Duration::ZERO), Some(Delivery::Item(change(4))));
        slot.release();
        hub.publish(&[change(5)]);
        assert!(!hub.has_subscribers(), "a released slot is forgotten at the next publish");
        let other = hub.subscribe(8);
        drop(hub);
        assert_eq!(other.wait(Duration::ZERO), Some(Delivery::Closed));
    }

    #[test]
    fn an_async_waiter_is_woken_by_a_publish() {
        use std::sync::atomic::AtomicUsize;
        use std::task::Wake;
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let hub = Hub::default();
        let slot = hub.subscribe(8);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(slot.poll(&mut cx).is_pending());
        hub.publish(&[change(1)]);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(slot.poll(&mut cx), Poll::Ready(Delivery::Item(change(1))));
    }
}
