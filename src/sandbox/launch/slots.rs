//! Slot allocation, decided (pure): which slots a launch tries, in which
//! order, and what a create attempt's outcome means. [`super::allocate`]
//! carries the plan out against the daemon. Runs nothing, reads no state.
//!
//! Race-free by construction: the create request itself claims the name,
//! so the plan only orders the attempts; a name another launch claimed
//! first ([`claimed`] says `Ok(false)`) means "next slot".

use std::collections::BTreeSet;

use super::Error;
use crate::incus;
use crate::network;
use crate::sandbox::names::Slot;

/// One attempt of the second pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Retry {
    /// The slot.
    pub slot: Slot,
    /// Try only once its container turns out to be going away (a finished
    /// `cci run`'s, which the daemon is deleting).
    pub if_going_away: bool,
}

/// The slots a launch tries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SlotPlan {
    /// First pass, in order: each is created straight away.
    pub first: Vec<Slot>,
    /// Remove run containers whose cci is gone before the second pass.
    pub reap: bool,
    /// Second pass, in order, once the first found every slot taken.
    pub second: Vec<Retry>,
    /// The slot asked for (`--slot`), if any: decides the error when both
    /// passes fail.
    pub asked: Option<Slot>,
}

/// The plan for a launch into `asked` (or the lowest free slot) up to
/// `limit`, with `used` the slots that have a container now (only looked
/// up, and only needed, when no slot is asked for).
///
/// - A slot asked for: it alone; when taken, once more if its container is
///   going away. Above the limit: refused.
/// - Otherwise: the free slots, lowest first. When every one of them is
///   taken (by this launch's rivals, or none was free), finished runs are
///   reaped and every slot up to the limit is tried again, lowest first: a
///   free one straight away (its rival may have failed), a used one only
///   once its container turns out to be going away.
pub(super) fn plan(
    asked: Option<Slot>,
    used: &BTreeSet<Slot>,
    limit: u32,
) -> Result<SlotPlan, Error> {
    if let Some(slot) = asked {
        if slot.get() > limit {
            return Err(Error::SlotAboveLimit { slot, limit });
        }
        return Ok(SlotPlan {
            first: vec![slot],
            reap: false,
            second: vec![Retry {
                slot,
                if_going_away: true,
            }],
            asked,
        });
    }
    let all = || (1..=limit).filter_map(Slot::new);
    Ok(SlotPlan {
        first: all().filter(|s| !used.contains(s)).collect(),
        reap: true,
        second: all()
            .map(|slot| Retry {
                slot,
                if_going_away: used.contains(&slot),
            })
            .collect(),
        asked: None,
    })
}

/// What a guarded create's `result` means for the allocation: `Ok(true)`
/// launched; `Ok(false)` another launch claimed the name first (a
/// conflict), so the next slot; an error ends the launch (a missing image
/// said as such).
pub(super) fn claimed(result: Result<(), network::Error>, image: &str) -> Result<bool, Error> {
    match result {
        Ok(()) => Ok(true),
        Err(network::Error::Incus(e)) if e.is_conflict() => Ok(false),
        Err(network::Error::Incus(incus::Error::NotFound(_))) => Err(Error::ImageMissing {
            image: image.to_string(),
        }),
        Err(network::Error::Incus(e)) => Err(e.into()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(ns: &[u32]) -> Vec<Slot> {
        ns.iter().map(|n| Slot::new(*n).unwrap()).collect()
    }

    fn used(ns: &[u32]) -> BTreeSet<Slot> {
        slots(ns).into_iter().collect()
    }

    fn retries(p: &SlotPlan) -> Vec<(u32, bool)> {
        p.second
            .iter()
            .map(|r| (r.slot.get(), r.if_going_away))
            .collect()
    }

    #[test]
    fn free_slots_lowest_first_then_all_again_waiting_on_used_ones() {
        let p = plan(None, &used(&[1, 3]), 4).unwrap();
        assert_eq!(p.first, slots(&[2, 4]));
        assert!(p.reap);
        assert_eq!(retries(&p), [(1, true), (2, false), (3, true), (4, false)]);
        assert_eq!(p.asked, None);
    }

    #[test]
    fn every_slot_used_waits_for_one_going_away() {
        let p = plan(None, &used(&[1, 2]), 2).unwrap();
        assert!(p.first.is_empty());
        assert!(p.reap);
        assert_eq!(retries(&p), [(1, true), (2, true)]);
    }

    #[test]
    fn slots_above_the_limit_are_never_tried() {
        // A container in slot 9 from before the limit was lowered.
        let p = plan(None, &used(&[9]), 2).unwrap();
        assert_eq!(p.first, slots(&[1, 2]));
        assert_eq!(retries(&p), [(1, false), (2, false)]);
        let none = plan(None, &used(&[]), 0).unwrap();
        assert!(none.first.is_empty() && none.second.is_empty() && none.reap);
    }

    #[test]
    fn a_slot_asked_for_is_tried_alone_then_once_more_if_going_away() {
        let three = Slot::new(3).unwrap();
        // What is used is not even looked at: the create claims the name.
        let p = plan(Some(three), &used(&[3]), 3).unwrap();
        assert_eq!(p.first, [three]);
        assert!(!p.reap);
        assert_eq!(retries(&p), [(3, true)]);
        assert_eq!(p.asked, Some(three));
    }

    #[test]
    fn a_slot_above_the_limit_is_refused() {
        let r = plan(Slot::new(5), &used(&[]), 4);
        assert!(matches!(r, Err(Error::SlotAboveLimit { limit: 4, .. })));
    }

    #[test]
    fn a_conflict_on_create_means_the_next_slot() {
        let conflict = network::Error::Incus(incus::Error::Conflict("exists".into()));
        assert!(!claimed(Err(conflict), "cci").unwrap());
        assert!(claimed(Ok(()), "cci").unwrap());
        let missing = network::Error::Incus(incus::Error::NotFound("no image".into()));
        assert!(matches!(
            claimed(Err(missing), "cci"),
            Err(Error::ImageMissing { image }) if image == "cci"
        ));
        // A refused firewall is no reason to try another slot.
        let nft = network::Error::Nft("refused".into());
        assert!(matches!(claimed(Err(nft), "cci"), Err(Error::Network(_))));
    }
}
