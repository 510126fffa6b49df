//! Quorum mode's local priority pick (docs/design.md §3). Quorum queues have
//! no priorities on RabbitMQ 3.x, so a stage has one queue per priority lane
//! and a worker consumes all of them, each with a per-consumer prefetch (the
//! lane's credit). Deliveries wait here until a handler slot is free; the
//! highest lane's goes first.
//!
//! A lane that used all its credit had more messages behind it: when one of
//! its deliveries finishes, the broker sends the next one a round trip later.
//! A lower lane's delivery started in that moment would jump the queue, so the
//! pick waits up to [`REFILL_WAIT`] for that refill. The same holds at the
//! start: lanes that held messages are waited for (up to [`START_WAIT`]).

use std::collections::VecDeque;
use tokio::time::{Duration, Instant};

/// How long a saturated higher lane's refill is waited for.
pub(crate) const REFILL_WAIT: Duration = Duration::from_millis(50);
/// How long lanes that held messages when consuming began are waited for.
pub(crate) const START_WAIT: Duration = Duration::from_millis(500);

/// What to do next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pick<T> {
    /// Start this delivery.
    Start(T),
    /// A higher lane is expected by then; ask again at that instant.
    WaitUntil(Instant),
    /// Nothing held.
    Idle,
}

/// The deliveries of the four lanes (index = AMQP priority) not started yet.
#[derive(Debug)]
pub(crate) struct Lanes<T> {
    credit: u32,
    held: [VecDeque<T>; 4],
    /// Delivered and not finished (held or in a handler), per lane.
    outstanding: [u32; 4],
    /// The lane used all its credit and has not been seen empty since.
    saturated: [bool; 4],
    /// Refills asked for (deliveries of a saturated lane finished) and not
    /// arrived yet, and until when they are waited for.
    refills: [u32; 4],
    refill_due: [Option<Instant>; 4],
    /// Lanes that held messages at the start and have not delivered yet.
    start: Option<(Vec<u8>, Instant)>,
}

impl<T> Lanes<T> {
    /// Lanes consumed with `credit` each; `waiting` lanes held messages when
    /// consuming began.
    pub(crate) fn new(credit: u16, waiting: Vec<u8>, now: Instant) -> Self {
        Lanes {
            credit: u32::from(credit),
            held: Default::default(),
            outstanding: [0; 4],
            saturated: [false; 4],
            refills: [0; 4],
            refill_due: [None; 4],
            start: (!waiting.is_empty()).then(|| (waiting, now + START_WAIT)),
        }
    }

    /// A delivery arrived on `lane`.
    pub(crate) fn arrived(&mut self, lane: u8, delivery: T) {
        let i = usize::from(lane.min(3));
        self.held[i].push_back(delivery);
        self.outstanding[i] += 1;
        if self.outstanding[i] >= self.credit {
            self.saturated[i] = true;
        }
        self.refills[i] = self.refills[i].saturating_sub(1);
        if self.refills[i] == 0 {
            self.refill_due[i] = None;
        }
        if let Some((waiting, _)) = self.start.as_mut() {
            waiting.retain(|&l| l != lane);
            if waiting.is_empty() {
                self.start = None;
            }
        }
    }

    /// A delivery of `lane` finished (acked or requeued).
    pub(crate) fn finished(&mut self, lane: u8, now: Instant) {
        let i = usize::from(lane.min(3));
        if self.saturated[i] {
            self.refills[i] += 1;
            self.refill_due[i] = Some(now + REFILL_WAIT);
        }
        self.outstanding[i] = self.outstanding[i].saturating_sub(1);
    }

    /// The delivery to start now, if any.
    pub(crate) fn pick(&mut self, now: Instant) -> Pick<(u8, T)> {
        if let Some((_, until)) = &self.start {
            if now < *until {
                return Pick::WaitUntil(*until);
            }
            self.start = None;
        }
        let Some(best) = (0..4).rev().find(|&i| !self.held[i].is_empty()) else {
            return Pick::Idle;
        };
        let mut refill = None;
        for lane in best + 1..4 {
            match self.refill_due[lane] {
                Some(at) if at > now => refill = Some(refill.map_or(at, |r: Instant| r.min(at))),
                Some(_) => {
                    // No refill came: the lane's queue is empty for now.
                    self.refill_due[lane] = None;
                    self.refills[lane] = 0;
                    self.saturated[lane] = false;
                }
                None => {}
            }
        }
        if let Some(at) = refill {
            return Pick::WaitUntil(at);
        }
        match self.held[best].pop_front() {
            Some(delivery) => Pick::Start((best as u8, delivery)),
            None => Pick::Idle,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_lane_held_starts_first() {
        let now = Instant::now();
        let mut lanes = Lanes::new(4, Vec::new(), now);
        lanes.arrived(0, "batch");
        lanes.arrived(3, "operator");
        lanes.arrived(1, "normal");
        assert_eq!(lanes.pick(now), Pick::Start((3, "operator")));
        assert_eq!(lanes.pick(now), Pick::Start((1, "normal")));
        assert_eq!(lanes.pick(now), Pick::Start((0, "batch")));
        assert_eq!(lanes.pick(now), Pick::Idle);
    }

    #[test]
    fn a_saturated_higher_lanes_refill_is_waited_for_briefly() {
        let now = Instant::now();
        let mut lanes = Lanes::new(1, Vec::new(), now);
        lanes.arrived(2, "high 0");
        lanes.arrived(0, "low 0");
        assert_eq!(lanes.pick(now), Pick::Start((2, "high 0")));
        // Lane 2 used its whole credit: more may be behind it.
        lanes.finished(2, now);
        assert_eq!(lanes.pick(now), Pick::WaitUntil(now + REFILL_WAIT));
        lanes.arrived(2, "high 1");
        assert_eq!(lanes.pick(now), Pick::Start((2, "high 1")));
        lanes.finished(2, now);
        // No refill came: the lane was empty after all, and is not waited
        // for again until it uses its credit.
        assert_eq!(lanes.pick(now + REFILL_WAIT), Pick::Start((0, "low 0")));
        lanes.arrived(0, "low 1");
        lanes.arrived(2, "high 2");
        assert_eq!(lanes.pick(now), Pick::Start((2, "high 2")));
        lanes.finished(2, now);
        assert_eq!(lanes.pick(now), Pick::WaitUntil(now + REFILL_WAIT));
        assert_eq!(lanes.pick(now + REFILL_WAIT), Pick::Start((0, "low 1")));
    }

    #[test]
    fn every_refill_asked_for_is_waited_for() {
        let now = Instant::now();
        let mut lanes = Lanes::new(2, Vec::new(), now);
        lanes.arrived(2, "high 0");
        lanes.arrived(2, "high 1");
        lanes.arrived(0, "low 0");
        assert_eq!(lanes.pick(now), Pick::Start((2, "high 0")));
        assert_eq!(lanes.pick(now), Pick::Start((2, "high 1")));
        // Both finish before either refill arrives.
        lanes.finished(2, now);
        lanes.finished(2, now);
        lanes.arrived(2, "high 2");
        assert_eq!(lanes.pick(now), Pick::Start((2, "high 2")));
        assert!(
            matches!(lanes.pick(now), Pick::WaitUntil(_)),
            "one more refill is due"
        );
    }

    #[test]
    fn a_lane_below_its_credit_is_not_waited_for() {
        let now = Instant::now();
        let mut lanes = Lanes::new(4, Vec::new(), now);
        lanes.arrived(3, "operator");
        lanes.arrived(0, "batch");
        assert_eq!(lanes.pick(now), Pick::Start((3, "operator")));
        lanes.finished(3, now);
        assert_eq!(lanes.pick(now), Pick::Start((0, "batch")));
    }

    #[test]
    fn at_the_start_lanes_that_held_messages_are_waited_for() {
        let now = Instant::now();
        let mut lanes = Lanes::new(4, vec![2, 0], now);
        lanes.arrived(0, "batch");
        assert_eq!(lanes.pick(now), Pick::WaitUntil(now + START_WAIT));
        lanes.arrived(2, "interactive");
        assert_eq!(lanes.pick(now), Pick::Start((2, "interactive")));

        let mut silent = Lanes::new(4, vec![3], now);
        silent.arrived(1, "normal");
        assert_eq!(silent.pick(now + START_WAIT), Pick::Start((1, "normal")));
    }
}
