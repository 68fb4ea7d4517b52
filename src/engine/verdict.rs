//! Why a workspace is not changed now: one type for every such verdict, carried by jobs,
//! outcomes, events and reports. `Display` is the sentence people read; [`Verdict::code`]
//! is what programs match (the `reason_code` beside each `reason` in JSON). Nothing
//! reads a verdict back from its sentence.

use std::fmt;
use std::time::Duration;

use serde::ser::SerializeMap;

use super::clock::duration_text;

/// Why a workspace is left as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The quota screen: the quota has no room for its launch (or resize) now.
    OverQuota {
        /// A resize, not a launch or start.
        resize: bool,
        /// The quota's name.
        quota: String,
        /// vCPUs free in it.
        available: u32,
        /// vCPUs the plan needs in it.
        needed: u32,
    },
    /// It waits for room in a quota.
    WaitingForQuota {
        quota: String,
        needed: u32,
        free: u32,
    },
    /// AWS refused its vCPUs (VcpuLimitExceeded); the run waits for room.
    RefusedWaiting,
    /// AWS refused its vCPUs and the run does not wait: `detail` says the quota as read
    /// afterwards, and what to ask for.
    Refused { detail: String },
    /// The run's quota wait ended before the quota had room.
    QuotaWaitExpired { within: Duration },
    /// `watch`: a pass that would delete more than half the fleet is held.
    HeldDeletion {
        deletes: usize,
        live: usize,
        manifest: String,
    },
    /// `watch`: the workspace failed and backs off before its next try.
    BackingOff { failures: u32, next_try: Duration },
    /// A replacement terminates the instance, and the run was not allowed to.
    ReplaceNeedsPrune,
    /// A resize that does not say the type it starts from.
    ResizeFromUnknown,
    /// The action needs an instance and the workspace has none.
    NoInstance,
}

impl Verdict {
    /// The verdict's kind, for programs: `over_quota`, `waiting_for_quota`,
    /// `refused_waiting`, `refused_for_quota`, `quota_wait_expired`, `held_deletion`,
    /// `backing_off`, `replace_needs_prune`, `resize_from_unknown`, `no_instance`.
    pub fn code(&self) -> &'static str {
        match self {
            Verdict::OverQuota { .. } => "over_quota",
            Verdict::WaitingForQuota { .. } => "waiting_for_quota",
            Verdict::RefusedWaiting => "refused_waiting",
            Verdict::Refused { .. } => "refused_for_quota",
            Verdict::QuotaWaitExpired { .. } => "quota_wait_expired",
            Verdict::HeldDeletion { .. } => "held_deletion",
            Verdict::BackingOff { .. } => "backing_off",
            Verdict::ReplaceNeedsPrune => "replace_needs_prune",
            Verdict::ResizeFromUnknown => "resize_from_unknown",
            Verdict::NoInstance => "no_instance",
        }
    }

    /// Whether the quota screen left it out: the run could have waited for room instead.
    pub fn is_over_quota(&self) -> bool {
        matches!(self, Verdict::OverQuota { .. })
    }

    /// The codes of the verdicts about quota (what a page reading `reason_code` checks).
    pub const QUOTA_CODES: [&str; 5] = [
        "over_quota",
        "waiting_for_quota",
        "refused_waiting",
        "refused_for_quota",
        "quota_wait_expired",
    ];

    /// What stays the same while a workspace stands still for this reason, numbers and
    /// times aside: a watch says a standing reason once.
    pub fn standing(&self) -> String {
        match self {
            Verdict::OverQuota { quota, resize, .. } => {
                format!("{}:{quota}:{resize}", self.code())
            }
            Verdict::WaitingForQuota { quota, .. } => format!("{}:{quota}", self.code()),
            // Another failure is news; the countdown is not.
            Verdict::BackingOff { failures, .. } => format!("{}:{failures}", self.code()),
            _ => self.code().to_string(),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::OverQuota {
                resize,
                quota,
                available,
                needed,
            } => write!(
                f,
                "{}: the {quota} quota has room for {available} more vCPUs ({needed} needed)",
                if *resize { "not resized" } else { "not launched" }
            ),
            Verdict::WaitingForQuota {
                quota,
                needed,
                free,
            } => write!(
                f,
                "waiting for room in the {quota} quota: {needed} vCPUs needed, {free} free"
            ),
            Verdict::RefusedWaiting => f.write_str(
                "waiting for room in the quota: AWS refused the vCPUs (VcpuLimitExceeded); trying again when there is room",
            ),
            Verdict::Refused { detail } => write!(
                f,
                "not launched for quota: AWS refused the vCPUs (VcpuLimitExceeded){detail}"
            ),
            Verdict::QuotaWaitExpired { within } => write!(
                f,
                "not launched: the quota had no room for it within {}",
                duration_text(*within)
            ),
            Verdict::HeldDeletion {
                deletes,
                live,
                manifest,
            } => write!(
                f,
                "held: this pass would delete {deletes} of the fleet's {live} instances; run `prism apply {manifest}` to confirm"
            ),
            Verdict::BackingOff {
                failures,
                next_try,
            } => write!(
                f,
                "backing off after {failures} failure{}; next try in {}",
                if *failures == 1 { "" } else { "s" },
                duration_text(*next_try)
            ),
            Verdict::ReplaceNeedsPrune => f.write_str(
                "replacing terminates the instance and its data; set `prune: true` to allow it",
            ),
            Verdict::ResizeFromUnknown => {
                f.write_str("the resize does not say the type it starts from")
            }
            Verdict::NoInstance => f.write_str("no instance to act on"),
        }
    }
}

/// Serializes an optional verdict as its sentence (for fields named `…_reason`).
pub fn as_text<S: serde::Serializer>(v: &Option<Verdict>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_some(&v.to_string()),
        None => s.serialize_none(),
    }
}

/// In JSON, flattened into its holder: `"reason"` (the sentence) and `"reason_code"`.
impl serde::Serialize for Verdict {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("reason", &self.to_string())?;
        m.serialize_entry("reason_code", self.code())?;
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_reads_as_before_and_carries_its_code() {
        let v = Verdict::OverQuota {
            resize: false,
            quota: "On-Demand Standard".into(),
            available: 4,
            needed: 12,
        };
        assert_eq!(
            v.to_string(),
            "not launched: the On-Demand Standard quota has room for 4 more vCPUs (12 needed)"
        );
        #[derive(serde::Serialize)]
        struct Holder {
            workspace: &'static str,
            #[serde(flatten)]
            reason: Verdict,
        }
        let json = serde_json::to_value(Holder {
            workspace: "w",
            reason: v.clone(),
        })
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"workspace": "w", "reason": v.to_string(), "reason_code": "over_quota"})
        );
        let backing = Verdict::BackingOff {
            failures: 1,
            next_try: Duration::from_secs(90),
        };
        assert_eq!(
            backing.to_string(),
            "backing off after 1 failure; next try in 1m 30s"
        );
        // Numbers change, the standing reason does not.
        let waiting = |free| Verdict::WaitingForQuota {
            quota: "q".into(),
            needed: 8,
            free,
        };
        assert_eq!(waiting(0).standing(), waiting(4).standing());
        assert_ne!(waiting(0).standing(), v.standing());
    }
}
