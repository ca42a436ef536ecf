//! What a streaming engine will hold and do, decided before anything is allocated: slot
//! sizes under a VRAM budget, and the order of prefetches and computes.
use crate::error::{Error, Result};

/// Offsets inside the arena and the slots are multiples of this (DMA- and nvCOMP-friendly).
pub const ALIGN: usize = 256;

pub(super) fn align(x: usize) -> usize {
    x.div_ceil(ALIGN) * ALIGN
}

/// Sizes the slot ring must hold for one unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnitSize {
    pub stored: usize,
    pub decoded: usize,
}

/// The device memory a stream engine takes, decided before anything is allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SlotPlan {
    pub slots: usize,
    pub slot_stored: usize,
    pub slot_decoded: usize,
    /// Everything else: nvCOMP temp, chunk tables, scales, activations.
    pub fixed: usize,
}

impl SlotPlan {
    pub fn total(&self) -> usize {
        self.slots * (self.slot_stored + self.slot_decoded) + self.fixed
    }

    /// Slots sized for the largest unit; fails when `budget` cannot hold `slots` of them.
    pub fn new(units: &[UnitSize], slots: usize, fixed: usize, budget: Option<usize>) -> Result<SlotPlan> {
        if slots == 0 || units.is_empty() {
            return Err(Error::Invalid("streaming needs at least one unit and one slot".into()));
        }
        let plan = SlotPlan {
            slots,
            slot_stored: units.iter().map(|u| align(u.stored)).max().unwrap_or(0),
            slot_decoded: units.iter().map(|u| align(u.decoded)).max().unwrap_or(0),
            fixed,
        };
        if let Some(b) = budget {
            let one = SlotPlan { slots: 1, ..plan };
            if one.total() > b {
                return Err(Error::Invalid(format!(
                    "VRAM budget of {:.1} MB is too small: even one unit needs {:.1} MB ({:.1} MB compressed + {:.1} MB INT8 + {:.1} MB fixed)",
                    b as f64 / 1e6,
                    one.total() as f64 / 1e6,
                    plan.slot_stored as f64 / 1e6,
                    plan.slot_decoded as f64 / 1e6,
                    fixed as f64 / 1e6
                )));
            }
            if plan.total() > b {
                let fit = (b - fixed) / (plan.slot_stored + plan.slot_decoded);
                return Err(Error::Invalid(format!(
                    "VRAM budget of {:.1} MB holds {fit} slot(s), {slots} requested ({:.1} MB needed)",
                    b as f64 / 1e6,
                    plan.total() as f64 / 1e6
                )));
            }
        }
        Ok(plan)
    }
}

/// What the host enqueues, in order, for `units` units over `slots` slots: every unit is
/// prefetched (copy + decode) before it is computed, and unit `u + slots` — which reuses
/// unit `u`'s slot — only after unit `u`'s compute was enqueued (the event it waits on).
/// `warm`: the first `slots` units are in their slots already (the previous pass
/// prefetched them, see `WeightStream::prefetch_next_pass`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Prefetch { unit: usize, slot: usize },
    Compute { unit: usize, slot: usize },
}

pub fn schedule(units: usize, slots: usize, warm: bool) -> Vec<Step> {
    let first = if warm { 0 } else { units.min(slots) };
    let mut steps: Vec<Step> = (0..first).map(|u| Step::Prefetch { unit: u, slot: u % slots }).collect();
    for u in 0..units {
        steps.push(Step::Compute { unit: u, slot: u % slots });
        if u + slots < units {
            steps.push(Step::Prefetch { unit: u + slots, slot: (u + slots) % slots });
        }
    }
    steps
}
