//! The naming rule of fleets, members and workspaces, and the names of a fleet's
//! workspaces.

/// The longest fleet, member or workspace name (the schema's `maxLength`).
pub const NAME_MAX: usize = 40;

/// The one naming rule of fleets, members and workspaces: 1 to [`NAME_MAX`] lowercase
/// letters, digits and '-', starting and ending with a letter or digit (the schema's
/// `pattern`).
pub fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= NAME_MAX
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !n.starts_with('-')
        && !n.ends_with('-')
}

/// Names the workspaces of a fleet: numbered, zero-padded to two digits. The padding
/// never depends on the count, so raising the count (even past 99) only appends names.
pub fn numbered_workspaces(fleet: &str, count: u32) -> Vec<String> {
    (1..=count).map(|i| format!("{fleet}-{i:02}")).collect()
}

/// Names the workspaces of a fleet after its members.
pub fn member_workspaces(fleet: &str, members: &[String]) -> Vec<String> {
    members.iter().map(|m| format!("{fleet}-{m}")).collect()
}
