//! Job events: every change of a job's state or progress made through this store handle's
//! queue, as a snapshot of the job, to whoever listens (a console's live job list, a
//! progress bar). A store is written by one process, so a listener in that process hears of
//! every job the queue API changes. Jobs enqueued inside an application's own transaction
//! (`Tx::enqueue`) are heard of at their first claim.
//!
//! Listeners never slow the queue down: each has a bounded slot (the engine's, see
//! engine/hub.rs); one that falls behind is told it missed events and lists the jobs again.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::engine::hub::{Delivery, Slot};
use crate::engine::store::Store;
use crate::jobs::Job;

/// How many events a listener may fall behind before it is told it missed some.
pub const JOB_EVENTS_CAPACITY: usize = 1024;

/// The listeners of one store.
#[derive(Debug, Default)]
pub(crate) struct JobHub {
    slots: Mutex<Vec<Arc<Slot<JobEvent>>>>,
}

impl JobHub {
    fn publish(&self, events: &[JobEvent]) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if slots.is_empty() || events.is_empty() {
            return;
        }
        slots.retain(|slot| !slot.is_released());
        for slot in slots.iter() {
            slot.push(events.iter().cloned(), 0);
        }
    }
}

impl Drop for JobHub {
    fn drop(&mut self) {
        for slot in self.slots.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            slot.close();
        }
    }
}

/// What a listener hears.
#[derive(Debug, Clone, PartialEq)]
pub enum JobEvent {
    /// A job as it is now, after a change.
    Changed(Box<Job>),
    /// A job was deleted.
    Deleted(i64),
    /// Events were dropped because the listener fell behind: list the jobs again.
    Missed,
    /// The store closed: nothing more comes.
    Closed,
}

/// A listener's subscription; dropping it unsubscribes.
#[derive(Debug)]
pub struct JobEvents {
    slot: Arc<Slot<JobEvent>>,
}

impl JobEvents {
    /// The next event, waiting up to `timeout`; `None` when nothing came in time.
    pub fn wait(&self, timeout: Duration) -> Option<JobEvent> {
        self.slot.wait(timeout).map(event)
    }

    /// The next event for async code.
    pub fn poll_next(&self, cx: &mut Context<'_>) -> Poll<JobEvent> {
        self.slot.poll(cx).map(event)
    }

    /// The next event, awaited.
    pub async fn next(&self) -> JobEvent {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }
}

impl Drop for JobEvents {
    fn drop(&mut self) {
        self.slot.release();
    }
}

fn event(delivery: Delivery<JobEvent>) -> JobEvent {
    match delivery {
        Delivery::Item(event) => event,
        Delivery::Overflowed | Delivery::Lapsed => JobEvent::Missed,
        Delivery::Closed => JobEvent::Closed,
    }
}

impl Store {
    /// Listens to job changes from now on.
    pub fn job_events(&self) -> JobEvents {
        let slot = Slot::new(JOB_EVENTS_CAPACITY);
        let hub = self.extensions().get_or_default::<JobHub>();
        hub.slots.lock().unwrap_or_else(|p| p.into_inner()).push(slot.clone());
        JobEvents { slot }
    }

    /// Tells the listeners that `jobs` changed (called once their change committed).
    pub(crate) fn jobs_changed<'a>(&self, jobs: impl IntoIterator<Item = &'a Job>) {
        // Every claim and completion comes here: copy nothing when no one listens.
        if !self.job_listeners() {
            return;
        }
        let events: Vec<JobEvent> = jobs.into_iter().map(|job| JobEvent::Changed(Box::new(job.clone()))).collect();
        self.extensions().get_or_default::<JobHub>().publish(&events);
    }

    /// Whether anyone listens to job changes now.
    pub(crate) fn job_listeners(&self) -> bool {
        let hub = self.extensions().get_or_default::<JobHub>();
        let mut slots = hub.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.retain(|slot| !slot.is_released());
        !slots.is_empty()
    }

    /// Tells the listeners that job `id` was deleted.
    pub(crate) fn job_deleted(&self, id: i64) {
        self.extensions().get_or_default::<JobHub>().publish(&[JobEvent::Deleted(id)]);
    }
}
