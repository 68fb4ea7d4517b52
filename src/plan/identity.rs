//! Which workspace is whose: a roster member's workspace is found by the member
//! (tag `prism:member`), not by its name, and once named it keeps its name.
//!
//! Names from a roster depend on the other rows: two members whose values derive the
//! same name both get a suffix. Matched by name alone, a late joiner who collides with
//! a classmate would rename the classmate's workspace, which a plan can only do by
//! deleting it and launching another. So the names are resolved against the fleet's
//! live instances first, pure and in roster order:
//!
//! 1. a member whose instance carries their `prism:member` tag keeps that instance's
//!    name;
//! 2. an instance without the tag (launched before prism kept members) is adopted by
//!    its current name: by the first member, in row order, whose name it has, plain
//!    (`ana-lee`) or suffixed;
//! 3. everyone else is new, named as the roster names them, unless that name is an
//!    instance's already (another member's, or a workspace made by hand): then with
//!    the suffix of their own value.

use std::collections::{BTreeMap, HashSet};

use crate::cloud::{Instance, tags};
use crate::manifest::Manifest;
use crate::manifest::roster::{derive, member_key, suffixed};

/// The workspace name of each of `manifest`'s members (in the manifest's order), given
/// the fleet's `instances`.
pub fn resolve(manifest: &Manifest, instances: &[Instance]) -> Vec<String> {
    let Some(roster) = &manifest.roster else {
        return manifest.workspaces.clone();
    };
    let fleet = &manifest.name;
    let live: Vec<&Instance> = instances
        .iter()
        .filter(|i| !i.state.is_gone() && i.workspace().is_some())
        .collect();
    let keys: Vec<String> = roster
        .members
        .iter()
        .map(|m| member_key(&m.value))
        .collect();
    let mut names: Vec<Option<String>> = vec![None; keys.len()];
    for (k, name) in keys.iter().zip(names.iter_mut()) {
        *name = live
            .iter()
            .find(|i| i.tag(tags::MEMBER) == Some(k.as_str()))
            .and_then(|i| i.workspace())
            .map(str::to_string);
    }
    let untagged: Vec<&str> = live
        .iter()
        .filter(|i| i.tag(tags::MEMBER).is_none())
        .filter_map(|i| i.workspace())
        .collect();
    let mut claimed: HashSet<String> = names.iter().flatten().cloned().collect();
    for (m, (name, planned)) in roster
        .members
        .iter()
        .zip(names.iter_mut().zip(&manifest.workspaces))
    {
        if name.is_some() {
            continue;
        }
        let plain = format!("{fleet}-{}", derive(&m.value));
        *name = [plain.as_str(), planned.as_str()]
            .into_iter()
            .find(|n| untagged.contains(n) && !claimed.contains(*n))
            .map(str::to_string);
        if let Some(n) = name {
            claimed.insert(n.clone());
        }
    }
    let mut taken: HashSet<String> = live
        .iter()
        .filter_map(|i| i.workspace())
        .map(str::to_string)
        .chain(claimed)
        .collect();
    for ((m, name), planned) in roster
        .members
        .iter()
        .zip(names.iter_mut())
        .zip(&manifest.workspaces)
    {
        if name.is_some() {
            continue;
        }
        let mut chosen = planned.clone();
        if taken.contains(&chosen) {
            let base = derive(&m.value);
            chosen = [4, 8, 16, 64]
                .into_iter()
                .map(|len| format!("{fleet}-{}", suffixed(&base, &m.value, len)))
                .find(|n| !taken.contains(n))
                .unwrap_or(chosen);
        }
        taken.insert(chosen.clone());
        *name = Some(chosen);
    }
    names.into_iter().map(Option::unwrap_or_default).collect()
}

/// The member of each workspace `manifest` names, given the fleet's `instances`:
/// what launches tag their instances with.
pub fn members(manifest: &Manifest, instances: &[Instance]) -> BTreeMap<String, String> {
    let names = resolve(manifest, instances);
    match &manifest.roster {
        Some(roster) => names
            .into_iter()
            .zip(&roster.members)
            .map(|(n, m)| (n, member_key(&m.value)))
            .collect(),
        None => names.into_iter().map(|n| (n.clone(), n)).collect(),
    }
}

#[cfg(test)]
mod tests;
