//! Sold-out memory and zone choice: where a launch goes.
//!
//! AWS answers InsufficientInstanceCapacity per (instance type, availability zone), and
//! retrying the same pair at once rarely helps. So, as Karpenter's unavailable-offerings
//! cache does, an answer that the pair has no capacity (or does not offer the type)
//! marks it unavailable for a while ([`SOLD_OUT_TTL`] unless configured), for every
//! launch of the engine: the next workspaces go straight to a zone that has capacity
//! instead of each finding out for itself.
//!
//! Each workspace has an order of zones that depends only on its name and the region's
//! zones, never on the order of launches: numbered workspaces go round the zones
//! (`-01` the first, `-02` the second, …), others by a digest of their name. So a fleet
//! is spread evenly over the region (a class survives one zone's trouble), and a rerun
//! sends the same first-choice ClientToken as the run before it. The workspaces of one
//! first choice go round the other zones for their second, so that those of a sold-out
//! zone spread over the rest rather than crowd the next one.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::time::Instant;

/// How long a sold-out (instance type, zone) is avoided by default: Karpenter's
/// unavailable-offerings TTL.
pub const SOLD_OUT_TTL: Duration = Duration::from_secs(3 * 60);

/// Whether a launch may try a (type, zone) now.
#[derive(Debug, Clone, PartialEq)]
pub enum Availability {
    Available,
    /// Marked sold out; the mark holds for this much longer.
    SoldOut {
        left: Duration,
        code: String,
    },
    /// Its mark just ran out (it was removed): worth trying again.
    BackAgain,
}

/// A (type, zone) marked unavailable, as the progress state shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    pub instance_type: String,
    pub zone: String,
    pub code: String,
    pub left: Duration,
}

#[derive(Debug, Clone)]
struct Entry {
    until: Instant,
    code: String,
}

/// The sold-out (instance type, zone) pairs of one account and region.
#[derive(Debug)]
pub struct SoldOut {
    ttl: Mutex<Duration>,
    marks: Mutex<BTreeMap<(String, String), Entry>>,
}

impl Default for SoldOut {
    fn default() -> Self {
        SoldOut {
            ttl: Mutex::new(SOLD_OUT_TTL),
            marks: Mutex::new(BTreeMap::new()),
        }
    }
}

impl SoldOut {
    /// How long a mark holds.
    pub fn ttl(&self) -> Duration {
        *self.ttl.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes how long marks made from now on hold.
    pub fn set_ttl(&self, ttl: Duration) {
        *self.ttl.lock().unwrap_or_else(|e| e.into_inner()) = ttl;
    }

    /// Marks `instance_type` in `zone` unavailable after AWS answered `code`. Returns
    /// how long the mark holds when the pair was not marked yet (None: it was, and its
    /// mark is renewed; a second launch that was in flight learns nothing new).
    pub fn mark(&self, instance_type: &str, zone: &str, code: &str) -> Option<Duration> {
        let ttl = self.ttl();
        let now = Instant::now();
        let mut marks = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        let entry = Entry {
            until: now + ttl,
            code: code.to_string(),
        };
        let was = marks.insert((instance_type.to_string(), zone.to_string()), entry);
        was.is_none_or(|e| e.until <= now).then_some(ttl)
    }

    /// Whether `instance_type` may be launched in `zone` now. A mark that has run out is
    /// removed by the look that finds it so, which alone gets [`Availability::BackAgain`].
    pub fn check(&self, instance_type: &str, zone: &str) -> Availability {
        let now = Instant::now();
        let key = (instance_type.to_string(), zone.to_string());
        let mut marks = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        match marks.get(&key) {
            None => Availability::Available,
            Some(e) if e.until > now => Availability::SoldOut {
                left: e.until - now,
                code: e.code.clone(),
            },
            Some(_) => {
                marks.remove(&key);
                Availability::BackAgain
            }
        }
    }

    /// The marks in force, by type then zone.
    pub fn in_force(&self) -> Vec<Mark> {
        let now = Instant::now();
        let marks = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        marks
            .iter()
            .filter(|(_, e)| e.until > now)
            .map(|((t, z), e)| Mark {
                instance_type: t.clone(),
                zone: z.clone(),
                code: e.code.clone(),
                left: e.until - now,
            })
            .collect()
    }
}

/// The index, among `zones` zones, of `workspace`'s first-choice zone. A workspace
/// named `<fleet>-<number>` takes zone `(number − 1) mod zones`, so a numbered fleet
/// fills the zones in turn; any other name, a zone by a digest of the name.
pub fn first_choice(fleet: &str, workspace: &str, zones: usize) -> usize {
    if zones == 0 {
        return 0;
    }
    (place(fleet, workspace) % zones as u64) as usize
}

/// A workspace's place in the fleet: its number − 1, or a digest of its name.
fn place(fleet: &str, workspace: &str) -> u64 {
    let number = workspace
        .strip_prefix(fleet)
        .and_then(|s| s.strip_prefix('-'))
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|n| *n > 0);
    number.map_or_else(|| digest(workspace), |n| n - 1)
}

fn digest(name: &str) -> u64 {
    let h = Sha256::digest(name.as_bytes());
    u64::from_be_bytes(h[..8].try_into().expect("eight bytes"))
}

/// The zones `workspace` tries, in order: its first choice, then the others round the
/// list, starting further round for each turn of the fleet round the zones (the 1st,
/// 5th, 9th workspace of a 4-zone region go on to the 2nd, 3rd and 4th zone). Without
/// zones, one try where AWS chooses (None).
pub fn zone_order(fleet: &str, workspace: &str, zones: &[String]) -> Vec<Option<String>> {
    let n = zones.len();
    if n == 0 {
        return vec![None];
    }
    let place = place(fleet, workspace);
    let first = (place % n as u64) as usize;
    let turn = if n > 1 {
        ((place / n as u64) % (n as u64 - 1)) as usize
    } else {
        0
    };
    let others = (1..n).map(|i| (first + 1 + (turn + i - 1) % (n - 1)) % n);
    std::iter::once(first)
        .chain(others)
        .map(|i| Some(zones[i].clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zones() -> Vec<String> {
        ["us-west-2a", "us-west-2b", "us-west-2c"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn a_numbered_fleet_fills_the_zones_in_turn() {
        let firsts: Vec<usize> = (1..=7)
            .map(|n| first_choice("cs", &format!("cs-{n:02}"), 3))
            .collect();
        assert_eq!(firsts, [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(first_choice("cs", "cs-100", 3), 99 % 3);
        let order = zone_order("cs", "cs-02", &zones());
        assert_eq!(
            order,
            ["us-west-2b", "us-west-2c", "us-west-2a"].map(|z| Some(z.to_string()))
        );
        assert_eq!(zone_order("cs", "cs-02", &[]), [None]);
        // The workspaces of the first zone go on to each other zone in turn.
        let seconds: Vec<Option<String>> = [1, 4, 7, 10]
            .iter()
            .map(|n| zone_order("cs", &format!("cs-{n:02}"), &zones())[1].clone())
            .collect();
        assert_eq!(
            seconds,
            ["us-west-2b", "us-west-2c", "us-west-2b", "us-west-2c"].map(|z| Some(z.to_string()))
        );
        for n in 1..=12 {
            let mut order = zone_order("cs", &format!("cs-{n:02}"), &zones());
            order.sort();
            assert_eq!(
                order,
                zones().into_iter().map(Some).collect::<Vec<_>>(),
                "every zone once"
            );
        }
    }

    #[test]
    fn named_workspaces_spread_by_their_name_and_never_by_order() {
        let members = ["alice", "bob", "carol", "dave", "erin", "frank", "grace"];
        let firsts: Vec<usize> = members
            .iter()
            .map(|m| first_choice("lab", &format!("lab-{m}"), 3))
            .collect();
        let again: Vec<usize> = members
            .iter()
            .rev()
            .map(|m| first_choice("lab", &format!("lab-{m}"), 3))
            .rev()
            .collect();
        assert_eq!(firsts, again, "the choice does not depend on the order");
        assert!(firsts.iter().all(|z| *z < 3));
        assert!(
            (0..3).all(|z| firsts.contains(&z)),
            "seven names use every zone: {firsts:?}"
        );
        // A name that only looks numbered (not `<fleet>-<n>`) is hashed too.
        assert_eq!(
            first_choice("lab", "lab-0", 3),
            (digest("lab-0") % 3) as usize
        );
    }

    use proptest::prelude::*;

    proptest! {
        /// Every zone once, the first choice first; a numbered fleet of whole turns
        /// puts as many first choices in each zone, and the workspaces of any one zone
        /// spread over the others within one of each other.
        #[test]
        fn orders_are_permutations_that_spread(zones in 1usize..7, turns in 1u64..6, name in "[a-z]{1,8}") {
            let list: Vec<String> = (0..zones).map(|i| format!("z{i}")).collect();
            let named = zone_order("f", &format!("f-{name}"), &list);
            let mut sorted = named.clone();
            sorted.sort();
            prop_assert_eq!(sorted, list.iter().cloned().map(Some).collect::<Vec<_>>());
            prop_assert_eq!(named[0].clone(), Some(list[first_choice("f", &format!("f-{name}"), zones)].clone()));

            let size = turns * zones as u64;
            let orders: Vec<Vec<Option<String>>> = (1..=size)
                .map(|n| zone_order("f", &format!("f-{n:02}"), &list))
                .collect();
            for z in &list {
                let firsts = orders.iter().filter(|o| o[0].as_ref() == Some(z)).count() as u64;
                prop_assert_eq!(firsts, turns);
            }
            if zones > 1 {
                let displaced: Vec<&Option<String>> = orders
                    .iter()
                    .filter(|o| o[0].as_deref() == Some("z0"))
                    .map(|o| &o[1])
                    .collect();
                let counts: Vec<usize> = list[1..]
                    .iter()
                    .map(|z| displaced.iter().filter(|d| d.as_deref() == Some(z.as_str())).count())
                    .collect();
                let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
                prop_assert!(hi - lo <= 1, "{:?}", counts);
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_mark_holds_for_its_ttl_then_the_pair_is_back_once() {
        let s = SoldOut::default();
        assert_eq!(s.check("t3.micro", "us-west-2a"), Availability::Available);
        assert_eq!(
            s.mark("t3.micro", "us-west-2a", "InsufficientInstanceCapacity"),
            Some(SOLD_OUT_TTL)
        );
        assert_eq!(
            s.mark("t3.micro", "us-west-2a", "InsufficientInstanceCapacity"),
            None,
            "already marked"
        );
        assert_eq!(s.check("t3.micro", "us-west-2b"), Availability::Available);
        assert_eq!(s.check("m5.large", "us-west-2a"), Availability::Available);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(
            s.check("t3.micro", "us-west-2a"),
            Availability::SoldOut {
                left: Duration::from_secs(120),
                code: "InsufficientInstanceCapacity".into()
            }
        );
        assert_eq!(s.in_force().len(), 1);
        tokio::time::advance(Duration::from_secs(120)).await;
        assert!(s.in_force().is_empty());
        assert_eq!(s.check("t3.micro", "us-west-2a"), Availability::BackAgain);
        assert_eq!(s.check("t3.micro", "us-west-2a"), Availability::Available);

        s.set_ttl(Duration::from_secs(10));
        assert_eq!(
            s.mark("t3.micro", "us-west-2a", "Unsupported"),
            Some(Duration::from_secs(10))
        );
    }
}
