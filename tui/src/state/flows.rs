//! The bounded log of recent flows behind the flows view, and the count of
//! flows the relay reported this client lost.
//!
//! Flows are kept as wire messages: the shared filters
//! ([`FlowFilterSet`]) and the line formatter work on them, and keeping one
//! copy avoids a second, lossy representation. Their strings are raw, so the
//! view must print them through a sanitizing formatter.

use std::collections::VecDeque;

use skymap_proto::filter::FlowFilterSet;
use skymap_proto::v1::Flow;

/// A ring of the newest `capacity` flows, oldest evicted first.
#[derive(Debug)]
pub struct FlowLog {
    flows: VecDeque<Flow>,
    capacity: usize,
    lost: u64,
    evicted: u64,
}

impl FlowLog {
    /// A log keeping at most `capacity` flows (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            flows: VecDeque::with_capacity(capacity.min(4096)),
            capacity,
            lost: 0,
            evicted: 0,
        }
    }

    pub fn push(&mut self, flow: Flow) {
        if self.flows.len() == self.capacity {
            self.flows.pop_front();
            self.evicted += 1;
        }
        self.flows.push_back(flow);
    }

    /// Adds a `LostFlows` report from the relay.
    pub fn record_lost(&mut self, count: u64) {
        self.lost = self.lost.saturating_add(count);
    }

    /// Flows the relay says this client missed.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Flows pushed out of the ring to make room.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// All flows, newest first.
    pub fn iter(&self) -> impl Iterator<Item = &Flow> {
        self.flows.iter().rev()
    }

    /// The flows that pass `filter`, newest first.
    pub fn iter_filtered<'a>(
        &'a self,
        filter: &'a FlowFilterSet,
    ) -> impl Iterator<Item = &'a Flow> {
        self.iter().filter(move |f| filter.matches(f))
    }

    pub fn clear(&mut self) {
        self.flows.clear();
    }
}
