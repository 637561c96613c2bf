//! Following the change log as it grows: every committed change after a given seq, in seq
//! order, exactly once — first those already in the log, then live ones as they commit.
//!
//! A feed registers with the store's hub (engine/hub.rs) *before* it reads the log, so a change
//! committed in between is either read from the log or queued, never lost; duplicates at the
//! seam are dropped by seq. A live change whose seq is not the next one (the queue started
//! after the log was read) sends the feed back to the log until it has caught up.
//!
//! Two forms share this:
//! - [`Feed`], for async code: [`Feed::next`] (or the `Stream` impl) waits on a waker, so a
//!   server needs no thread per subscriber. It reads the log in pages of `FEED_PAGE` changes,
//!   each a short synchronous read. A feed that falls further behind than its buffer gets
//!   [`FeedEvent::Gap`] and ends; resuming from the last seq it delivered fills the gap from
//!   the log. A `since` beyond the log's end (the store was restored to an earlier state) is a
//!   gap too, reported first — never silently skipped.
//! - [`Subscription`], blocking, for the CLI and simple embedders: it refills from the log by
//!   itself after an overflow, so it never misses a change and never reports a gap.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::data::changes::{changes_since, Change};
use crate::engine::change::Seq;
use crate::engine::hub::{Delivery, Slot, SlotReader};
use crate::engine::store::{Inner, Store};
use crate::error::{Error, Result};

/// Changes read from the log per step while a feed catches up.
pub(crate) const FEED_PAGE: usize = 256;

/// How to follow the change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedOptions {
    /// Deliver changes after this seq. Default: `None`, from the newest change on.
    pub since: Option<Seq>,
    /// Live changes held for a slow reader before it gets [`FeedEvent::Gap`]. Default: 1,024.
    pub buffer: usize,
}

impl Default for FeedOptions {
    fn default() -> Self {
        FeedOptions { since: None, buffer: 1024 }
    }
}

impl FeedOptions {
    /// Changes after `seq`.
    pub fn since(seq: impl Into<Seq>) -> Self {
        FeedOptions { since: Some(seq.into()), ..FeedOptions::default() }
    }
}

/// Why a feed stopped before the next change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum GapReason {
    /// The reader fell more than its buffer behind the writers.
    Overflow,
    /// The log has no change after the seq asked for: the store holds fewer changes than the
    /// reader has seen (it was restored to an earlier state, or the seq came from elsewhere).
    Unavailable,
}

/// What a [`Feed`] delivers.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum FeedEvent {
    /// The next committed change.
    Change(Change),
    /// The feed cannot go on without missing changes, and has ended. `last_seq` is the last
    /// change it delivered (or the `since` it started from): resume from there with a new
    /// feed, or — for [`GapReason::Unavailable`] — start over from the store's current state.
    Gap { last_seq: Seq, reason: GapReason },
}

/// The state both forms share: where the reader is, and what it has yet to read.
#[derive(Debug)]
struct Cursor {
    store: Weak<Inner>,
    slot: Arc<Slot<Change>>,
    /// The last seq delivered.
    last: u64,
    /// Changes read from the log, not delivered yet.
    backlog: VecDeque<Change>,
    /// The log may hold changes after `last` that the queue does not: read it next.
    behind: bool,
}

impl Drop for Cursor {
    fn drop(&mut self) {
        self.slot.release();
    }
}

/// One step of a cursor: what it found without waiting.
enum Step {
    Change(Change),
    Overflowed,
    Closed,
    /// Nothing now: wait on the slot.
    Empty,
}

impl Cursor {
    fn new(store: &Store, since: Option<u64>, buffer: usize) -> Result<Cursor> {
        // Registered first, then positioned: see the module docs.
        let slot = store.inner.hub.subscribe(buffer);
        let last = match since {
            Some(seq) => seq,
            None => store.last_seq()?.0,
        };
        Ok(Cursor {
            store: Arc::downgrade(&store.inner),
            slot,
            last,
            backlog: VecDeque::new(),
            behind: since.is_some(),
        })
    }

    fn store(&self) -> Result<Arc<Inner>> {
        self.store.upgrade().ok_or(Error::WriterStopped)
    }

    /// Reads the next page of the log after `last` into the backlog; false when it was empty.
    fn read_log(&mut self) -> Result<bool> {
        let inner = self.store()?;
        let conn = inner.readers.get()?;
        let page = changes_since(&conn, self.last, FEED_PAGE)?;
        let found = !page.is_empty();
        self.backlog.extend(page);
        Ok(found)
    }

    /// The next change or slot signal available without waiting.
    fn step(&mut self, delivery: Option<Delivery<Change>>) -> Result<Step> {
        let mut delivery = delivery;
        loop {
            if let Some(change) = self.backlog.pop_front() {
                if change.seq.0 > self.last {
                    return self.deliver(change).map(Step::Change);
                }
                continue;
            }
            if self.behind {
                if self.read_log()? {
                    continue;
                }
                self.behind = false;
            }
            let next = match delivery.take() {
                Some(d) => d,
                None => match self.slot.wait(Duration::ZERO) {
                    Some(d) => d,
                    None => return Ok(Step::Empty),
                },
            };
            match next {
                Delivery::Item(change) if change.seq.0 <= self.last => {}
                Delivery::Item(change) if change.seq.0 == self.last + 1 => {
                    return self.deliver(change).map(Step::Change)
                }
                // Committed before the queue caught up with the log: it is in the log.
                Delivery::Item(_) | Delivery::Lapsed => self.behind = true,
                Delivery::Overflowed => return Ok(Step::Overflowed),
                Delivery::Closed => return Ok(Step::Closed),
            }
        }
    }

    /// Marks `change` delivered, with its sealed fields opened when the handle can.
    fn deliver(&mut self, mut change: Change) -> Result<Change> {
        self.last = change.seq.0;
        if crate::data::encryption::may_be_sealed(&change) {
            let inner = self.store()?;
            let conn = inner.readers.get()?;
            crate::data::encryption::open_changes(&inner.keys, &conn, std::slice::from_mut(&mut change))?;
        }
        Ok(change)
    }
}

/// Committed changes for async code; see the module docs and [`Store::feed`].
#[derive(Debug)]
pub struct Feed {
    cursor: Cursor,
    /// A gap to report before anything else (a `since` beyond the log's end).
    pending: Option<FeedEvent>,
    ended: bool,
}

impl Feed {
    /// The next event; `None` once the feed has ended (after a gap, or when the store closed).
    pub async fn next(&mut self) -> Option<Result<FeedEvent>> {
        std::future::poll_fn(|cx| self.poll_item(cx)).await
    }

    /// The next event, waiting up to `timeout` on this thread; `Ok(None)` when none came in
    /// time or the feed has ended (see [`Feed::is_ended`]).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<FeedEvent>> {
        self.wait_item(timeout)
    }

    /// The seq of the last change delivered (or the `since` the feed started from).
    pub fn last_seq(&self) -> Seq {
        Seq(self.cursor.last)
    }

    /// True once the feed delivered a gap or the store closed.
    pub fn is_ended(&self) -> bool {
        self.ended
    }
}

impl SlotReader for Feed {
    type Delivered = Change;
    type Item = FeedEvent;

    fn slot(&self) -> &Slot<Change> {
        &self.cursor.slot
    }

    fn ended(&self) -> bool {
        self.ended
    }

    fn step(&mut self, delivery: Option<Delivery<Change>>) -> Result<Option<FeedEvent>> {
        if self.ended {
            return Ok(None);
        }
        if let Some(event) = self.pending.take() {
            self.ended = matches!(event, FeedEvent::Gap { .. });
            return Ok(Some(event));
        }
        match self.cursor.step(delivery) {
            Ok(Step::Change(change)) => Ok(Some(FeedEvent::Change(change))),
            Ok(Step::Overflowed) => {
                self.ended = true;
                Ok(Some(FeedEvent::Gap { last_seq: Seq(self.cursor.last), reason: GapReason::Overflow }))
            }
            Ok(Step::Closed) | Err(Error::WriterStopped) => {
                self.ended = true;
                Ok(None)
            }
            Ok(Step::Empty) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl futures_core::Stream for Feed {
    type Item = Result<FeedEvent>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_item(cx)
    }
}

/// A blocking stream of committed changes that never misses one; see [`Store::subscribe`].
#[derive(Debug)]
pub struct Subscription {
    cursor: Cursor,
}

impl Subscription {
    /// The next change, waiting up to `timeout`; `Ok(None)` when none came in time.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Change>> {
        let deadline = Instant::now() + timeout;
        let mut delivery = None;
        loop {
            match self.cursor.step(delivery.take())? {
                Step::Change(change) => return Ok(Some(change)),
                Step::Overflowed => {
                    // What the queue dropped is in the log: read it from there.
                    self.cursor.slot.clear(0);
                    self.cursor.behind = true;
                    continue;
                }
                Step::Closed => return Err(Error::WriterStopped),
                Step::Empty => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.cursor.slot.wait(left) {
                Some(d) => delivery = Some(d),
                None => return Ok(None),
            }
        }
    }

    /// The next change, waiting as long as it takes.
    pub fn recv(&mut self) -> Result<Change> {
        loop {
            if let Some(change) = self.recv_timeout(Duration::from_secs(3600))? {
                return Ok(change);
            }
        }
    }

    /// The seq of the last change delivered.
    pub fn last_seq(&self) -> Seq {
        Seq(self.cursor.last)
    }
}

impl Store {
    /// Subscribes to committed changes after `since` (default: from now on), delivered in seq
    /// order, none missed: a blocking [`Subscription`].
    pub fn subscribe(&self, since: Option<Seq>) -> Result<Subscription> {
        Ok(Subscription { cursor: Cursor::new(self, since.map(Seq::get), FeedOptions::default().buffer)? })
    }

    /// Follows committed changes from async code: a [`Feed`]. A `since` beyond the newest
    /// change is reported as [`FeedEvent::Gap`] (reason [`GapReason::Unavailable`]) first.
    pub fn feed(&self, options: &FeedOptions) -> Result<Feed> {
        let cursor = Cursor::new(self, options.since.map(Seq::get), options.buffer)?;
        let newest = self.last_seq()?;
        let pending = options
            .since
            .filter(|since| *since > newest)
            .map(|since| FeedEvent::Gap { last_seq: since, reason: GapReason::Unavailable });
        Ok(Feed { cursor, pending, ended: false })
    }
}
