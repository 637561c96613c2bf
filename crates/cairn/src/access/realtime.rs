//! Realtime subscriptions for many callers (SRV-2): one reader of the change log judges each
//! committed change for every subscriber of its collection (access/watch.rs) and queues what
//! each may see; each subscriber reads its own queue, resuming from any seq without a gap or
//! a duplicate.
//!
//! **One fan-out.** [`Store::realtime`] starts a thread that follows the log with a
//! [`crate::Feed`]. Subscribers are kept by collection, so a change is judged only for those
//! who follow its collection, in memory; the database is asked at most once per change for
//! what the change does not carry (watch.rs, `Lookups`).
//!
//! **Bounded per subscriber.** Each subscriber's queue holds at most `buffer` events. One
//! that falls further behind loses its queue (the fan-out stops judging for it, so it costs
//! nothing) and, when it reads again, catches up from the log itself — judging the changes
//! it missed with the same rules — then goes on live. Memory stays bounded however slow a
//! subscriber is, and nothing is lost. (A server cuts off a client that does not read at
//! all; that is a transport's business.)
//!
//! **Exact resume.** A [`Watch`] registers under the fan-out's lock and learns the fan-out's
//! position P: everything after P reaches its queue, judged; everything from the seq it
//! resumes from up to P it reads from the log. Duplicates at the seam are dropped by seq.
//! A resume point from another history ([`Epoch`]) or beyond the log's end is answered with
//! a reset, never silently. [`Watch::position`] says how far a subscriber has been judged,
//! events or not, so that a subscriber with a narrow filter can resume from there.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use serde::Serialize;

use crate::access::tokens::Principal;
use crate::access::watch::{Lookups, Matcher, ResetReason, Verdict, WatchEvent, WatchSpec};
use crate::data::changes::changes_since;
use crate::data::feed::{FeedEvent, FeedOptions, FEED_PAGE};
use crate::engine::change::{Change, Seq};
use crate::engine::hub::{Delivery, Slot, SlotReader};
use crate::engine::lineage::Epoch;
use crate::engine::store::{Inner, Store};
use crate::error::{Error, Result};

/// How long the fan-out waits for a change before looking whether it should stop.
const POLL: Duration = Duration::from_millis(200);

/// Settings of a [`Realtime`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealtimeOptions {
    /// Events held per subscriber before it must catch up from the log. Default: 256.
    pub buffer: usize,
}

impl Default for RealtimeOptions {
    fn default() -> Self {
        RealtimeOptions { buffer: 256 }
    }
}

/// Where a subscriber resumes: after `since`, in the history `epoch`. Without `since`, from
/// now on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resume {
    pub since: Option<Seq>,
    /// The epoch the subscriber got with `since`; a `since` without one cannot be trusted
    /// and is answered with a reset.
    pub epoch: Option<Epoch>,
}

/// What a [`Watch`] delivers.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum WatchItem {
    /// An event about a record (shared with the other subscribers it is the same for).
    Event(Arc<WatchEvent>),
    /// The subscriber cannot trust what it holds: it should fetch what it follows again.
    /// Events go on after `seq` (unless the reason ends the subscription: a dropped
    /// collection, a schema the subscription no longer fits).
    Reset { reason: ResetReason, seq: Seq, epoch: String },
}

/// The fan-out of one store's changes to its realtime subscribers; see the module docs.
/// Dropping it stops the fan-out and ends every [`Watch`].
#[derive(Debug)]
pub struct Realtime {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    store: Weak<Inner>,
    epoch: Epoch,
    buffer: usize,
    state: Mutex<State>,
    stop: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    /// Every change up to here has been judged for every subscriber registered.
    position: u64,
    by_collection: HashMap<String, Vec<Arc<Subscriber>>>,
    ended: bool,
}

#[derive(Debug)]
struct Subscriber {
    matcher: Mutex<Matcher>,
    slot: Arc<Slot<Verdict>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn store(&self) -> Result<Store> {
        let inner = self.store.upgrade().ok_or(Error::WriterStopped)?;
        Ok(Store::from_inner(inner))
    }

    /// Judges one change for every subscriber of its collection.
    fn dispatch(&self, store: &Store, change: &Change) -> Result<()> {
        let conn = store.reader()?;
        let mut lookups = Lookups::new(&conn);
        let mut state = lock(&self.state);
        if let Some(subscribers) = state.by_collection.get_mut(&change.collection) {
            subscribers.retain(|s| Arc::strong_count(s) > 1);
            for subscriber in subscribers.iter() {
                if subscriber.slot.overflowed() {
                    continue;
                }
                let verdict = match lock(&subscriber.matcher).judge(change, &mut lookups) {
                    Ok(verdict) => verdict,
                    Err(e) => {
                        tracing::warn!(seq = %change.seq, error = %e, "a realtime subscriber could not be judged");
                        Verdict::End(ResetReason::SchemaChanged)
                    }
                };
                match verdict {
                    Verdict::Nothing => subscriber.slot.push(std::iter::empty(), change.seq.0),
                    verdict => subscriber.slot.push(std::iter::once(verdict), change.seq.0),
                };
            }
            if subscribers.is_empty() {
                state.by_collection.remove(&change.collection);
            }
        }
        state.position = change.seq.0;
        Ok(())
    }

    fn end_all(&self) {
        let mut state = lock(&self.state);
        state.ended = true;
        for subscriber in state.by_collection.values().flatten() {
            subscriber.slot.close();
        }
        state.by_collection.clear();
    }

    /// Follows the log until the store closes or the [`Realtime`] is dropped. It holds the
    /// store only while it reads or judges, never while it waits, so that the store can be
    /// closed (or restored) under it.
    fn run(self: Arc<Self>, mut since: Seq) {
        let mut feed = None;
        while !self.stop.load(Ordering::Acquire) {
            let f = match feed.as_mut() {
                Some(f) => f,
                None => match self.store().and_then(|s| s.feed(&FeedOptions { since: Some(since), buffer: 4096 })) {
                    Ok(f) => feed.insert(f),
                    Err(Error::WriterStopped) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "realtime: cannot follow the change log");
                        std::thread::sleep(POLL);
                        continue;
                    }
                },
            };
            match f.recv_timeout(POLL) {
                Ok(Some(FeedEvent::Change(change))) => match self.store().and_then(|s| self.dispatch(&s, &change)) {
                    Ok(()) => since = change.seq,
                    Err(Error::WriterStopped) => break,
                    Err(e) => {
                        tracing::warn!(seq = %change.seq, error = %e, "realtime: a change could not be judged");
                        feed = None;
                        std::thread::sleep(POLL);
                    }
                },
                // Fallen behind the writers: the log holds what the feed dropped.
                Ok(Some(_)) => feed = None,
                Ok(None) if f.is_ended() => break,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "realtime: reading the change log failed");
                    feed = None;
                    std::thread::sleep(POLL);
                }
            }
        }
        self.end_all();
    }
}

/// Stops the fan-out and waits for its thread (at most one poll interval), so that once
/// this returns it holds nothing of the store.
impl Drop for Realtime {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.end_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Store {
    /// Starts the realtime fan-out of this store's changes (a thread of its own, holding no
    /// strong reference to the store: it ends when the store closes).
    pub fn realtime(&self, options: &RealtimeOptions) -> Result<Realtime> {
        let position = self.last_seq()?;
        let shared = Arc::new(Shared {
            store: Arc::downgrade(&self.inner),
            epoch: self.epoch()?,
            buffer: options.buffer.max(1),
            state: Mutex::new(State { position: position.0, ..State::default() }),
            stop: AtomicBool::new(false),
        });
        let runner = shared.clone();
        let thread = std::thread::Builder::new()
            .name("cairn-realtime".into())
            .spawn(move || runner.run(position))
            .map_err(|e| Error::Internal(format!("cannot start the realtime thread: {e}")))?;
        Ok(Realtime { shared, thread: Some(thread) })
    }
}

impl Realtime {
    /// The history the seqs of this fan-out belong to.
    pub fn epoch(&self) -> &Epoch {
        &self.shared.epoch
    }

    /// Subscribes `principal` to `spec`, from `resume`. Fails on what the subscription
    /// names that does not exist or does not parse (collection, record id, filter, fields).
    pub fn watch(&self, principal: Principal, spec: WatchSpec, resume: &Resume) -> Result<Watch> {
        let store = self.shared.store()?;
        let matcher = Matcher::new(&*store.reader()?, principal, spec)?;
        let collection = matcher.spec().collection.clone();
        let subscriber = Arc::new(Subscriber { matcher: Mutex::new(matcher), slot: Slot::new(self.shared.buffer) });
        let position = {
            let mut state = lock(&self.shared.state);
            if state.ended {
                return Err(Error::WriterStopped);
            }
            subscriber.slot.clear(state.position);
            state.by_collection.entry(collection).or_default().push(subscriber.clone());
            state.position
        };
        let mut watch = Watch {
            shared: self.shared.clone(),
            subscriber,
            last: position,
            catch_up_to: position,
            backlog: VecDeque::new(),
            pending: None,
            ended: false,
        };
        let epoch = self.shared.epoch.to_string();
        match resume.since {
            None => {}
            Some(_) if resume.epoch.as_ref() != Some(&self.shared.epoch) => {
                watch.pending = Some(WatchItem::Reset { reason: ResetReason::Epoch, seq: Seq(position), epoch })
            }
            Some(since) if since > store.last_seq()? => {
                watch.pending = Some(WatchItem::Reset { reason: ResetReason::Unavailable, seq: Seq(position), epoch })
            }
            Some(since) => watch.last = since.0,
        }
        Ok(watch)
    }

    /// How many subscribers are registered.
    pub fn subscribers(&self) -> usize {
        lock(&self.shared.state).by_collection.values().map(Vec::len).sum()
    }
}

/// One subscription: its events in seq order, none missed; see the module docs.
#[derive(Debug)]
pub struct Watch {
    shared: Arc<Shared>,
    subscriber: Arc<Subscriber>,
    /// Every change up to here has been judged and what it gave delivered.
    last: u64,
    /// The log is to be read (and judged here) up to this seq before the queue.
    catch_up_to: u64,
    backlog: VecDeque<Change>,
    pending: Option<WatchItem>,
    ended: bool,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.subscriber.slot.close();
    }
}

impl Watch {
    /// The next item; `None` once the watch has ended (its collection was dropped, the
    /// store closed, the [`Realtime`] was dropped).
    pub async fn next(&mut self) -> Option<Result<WatchItem>> {
        std::future::poll_fn(|cx| self.poll_item(cx)).await
    }

    /// The next item, waiting up to `timeout` on this thread; `Ok(None)` when none came in
    /// time or the watch has ended ([`Watch::is_ended`]).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<WatchItem>> {
        self.wait_item(timeout)
    }

    /// How far this subscription has been judged: every change up to this seq has been
    /// delivered or did not concern it. Resuming from here misses nothing.
    pub fn position(&self) -> Seq {
        let idle = self.pending.is_none() && self.backlog.is_empty() && self.last >= self.catch_up_to;
        match self.subscriber.slot.idle_mark().filter(|_| idle) {
            Some(mark) => Seq(mark.max(self.last)),
            None => Seq(self.last),
        }
    }

    /// The epoch of the seqs this watch delivers.
    pub fn epoch(&self) -> &Epoch {
        &self.shared.epoch
    }

    /// True once the watch has ended.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// The caller's identity changed (their token was checked again and now names another
    /// role): later changes are judged for the new one.
    pub fn set_principal(&self, principal: Principal) -> Result<()> {
        lock(&self.subscriber.matcher).set_principal(principal)
    }

    fn end(&mut self, reason: ResetReason) -> Option<WatchItem> {
        self.ended = true;
        self.subscriber.slot.close();
        Some(WatchItem::Reset { reason, seq: Seq(self.last), epoch: self.shared.epoch.to_string() })
    }
}

impl SlotReader for Watch {
    type Delivered = Verdict;
    type Item = WatchItem;

    fn slot(&self) -> &Slot<Verdict> {
        &self.subscriber.slot
    }

    fn ended(&self) -> bool {
        self.ended
    }

    fn step(&mut self, delivery: Option<Delivery<Verdict>>) -> Result<Option<WatchItem>> {
        if let Some(item) = self.pending.take() {
            return Ok(Some(item));
        }
        let mut delivery = delivery;
        while !self.ended {
            if let Some(change) = self.backlog.pop_front() {
                if change.seq.0 <= self.last {
                    continue;
                }
                self.last = change.seq.0;
                let store = self.shared.store()?;
                let conn = store.reader()?;
                let verdict = lock(&self.subscriber.matcher).judge(&change, &mut Lookups::new(&conn))?;
                match verdict {
                    Verdict::Nothing => continue,
                    Verdict::Event(event) => return Ok(Some(WatchItem::Event(event))),
                    Verdict::End(reason) => return Ok(self.end(reason)),
                }
            }
            if self.last < self.catch_up_to {
                let store = self.shared.store()?;
                let page = changes_since(&*store.reader()?, self.last, FEED_PAGE)?;
                let mut page: VecDeque<Change> = page.into_iter().filter(|c| c.seq.0 <= self.catch_up_to).collect();
                if page.is_empty() {
                    self.last = self.catch_up_to;
                    continue;
                }
                let conn = store.reader()?;
                crate::data::encryption::open_changes(&store.inner.keys, &conn, page.make_contiguous())?;
                self.backlog = page;
                continue;
            }
            let next = match delivery.take() {
                Some(d) => d,
                None => match self.subscriber.slot.wait(Duration::ZERO) {
                    Some(d) => d,
                    None => return Ok(None),
                },
            };
            match next {
                Delivery::Item(Verdict::Event(event)) if event.seq.0 > self.last => {
                    self.last = event.seq.0;
                    return Ok(Some(WatchItem::Event(event)));
                }
                Delivery::Item(Verdict::End(reason)) => return Ok(self.end(reason)),
                // The fan-out's slots are never lapsed (only the hub's are).
                Delivery::Item(_) | Delivery::Lapsed => {}
                Delivery::Overflowed => {
                    // The queue was dropped: what it held, and what the fan-out skipped
                    // since, is read from the log, up to where the fan-out is now.
                    let state = lock(&self.shared.state);
                    self.subscriber.slot.clear(state.position);
                    self.catch_up_to = state.position;
                }
                Delivery::Closed => self.ended = true,
            }
        }
        Ok(None)
    }
}

impl futures_core::Stream for Watch {
    type Item = Result<WatchItem>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_item(cx)
    }
}
