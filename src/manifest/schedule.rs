//! A fleet's timetable: the checks of the `schedule:` key (located; the key as written
//! is typed in `raw.rs`), and the validated [`Schedule`] the planner reads. What the
//! schedule wants at a given moment is worked out in `plan::schedule`.

use jiff::tz::TimeZone;
use serde::Serialize;
use serde_json::Value;

use super::diagnostic::{Problem, did_you_mean};
use super::document::Document;
pub use super::raw::{Day, OffState, RawSchedule, RawWindow};

/// A validated schedule.
#[derive(Debug, Clone, Serialize)]
pub struct Schedule {
    /// The zone's IANA name.
    pub timezone: String,
    #[serde(skip)]
    pub tz: TimeZone,
    pub running: Vec<Window>,
    pub otherwise: OffState,
}

/// A validated window: minutes since midnight, `from < to <= 1440`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Window {
    pub name: String,
    pub days: Vec<Day>,
    pub from: u16,
    pub to: u16,
}

/// The name a window has when the manifest gives none.
pub const DEFAULT_WINDOW_NAME: &str = "class hours";

/// `HH:MM` as minutes since midnight; `24:00` only when `end`.
pub fn parse_time(text: &str, end: bool) -> Option<u16> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 || !(h.bytes().chain(m.bytes())).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    match (h, m) {
        (24, 0) if end => Some(1440),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

/// Minutes since midnight as `HH:MM`.
pub fn clock(minutes: u16) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

impl Window {
    /// How many hours a week the window is open (on the clock, whatever DST does).
    pub fn hours_per_week(&self) -> f64 {
        let mut days = self.days.clone();
        days.sort();
        days.dedup();
        days.len() as f64 * f64::from(self.to - self.from) / 60.0
    }
}

impl Schedule {
    /// Running hours in a week, on the clock.
    pub fn hours_per_week(&self) -> f64 {
        self.running.iter().map(Window::hours_per_week).sum()
    }
}

/// Turns a raw schedule that passed [`problems`] into a [`Schedule`].
pub fn build(raw: RawSchedule) -> Schedule {
    let tz = TimeZone::get(&raw.timezone).expect("checked: a known time zone");
    Schedule {
        timezone: raw.timezone,
        tz,
        running: raw
            .running
            .into_iter()
            .map(|w| Window {
                name: w.name.unwrap_or_else(|| DEFAULT_WINDOW_NAME.into()),
                days: w.days,
                from: parse_time(&w.from, false).expect("checked: a time"),
                to: parse_time(&w.to, true).expect("checked: a time"),
            })
            .collect(),
        otherwise: raw.otherwise.unwrap_or_default(),
    }
}

/// The schedule's problems that the schema cannot state: an unknown zone, times that
/// are not times, a window that ends before it starts, windows that overlap, a
/// schedule beside `state`, hibernation the template cannot do.
pub(super) fn problems(d: &Document, template_hibernates: bool) -> Vec<Problem> {
    let doc = &d.value;
    let Some(schedule) = doc.get("schedule").filter(|s| s.is_object()) else {
        return vec![];
    };
    let mut out = Vec::new();
    if doc.get("state").is_some() {
        out.push(d.at_key(
            "/state",
            "`state` and `schedule` cannot both be set".into(),
            "a second way to say the state",
            Some("a scheduled fleet runs in its windows and is `otherwise` (stopped or hibernated) outside them: remove `state`".into()),
        ));
    }
    if let Some(zone) = schedule.get("timezone").and_then(Value::as_str)
        && !zone.is_empty()
        && TimeZone::get(zone).is_err()
    {
        out.push(d.at_value(
            "/schedule/timezone",
            format!("unknown time zone `{zone}`"),
            "not a time zone",
            Some(zone_hint(zone)),
        ));
    }
    if schedule.get("otherwise").and_then(Value::as_str) == Some("hibernated")
        && !template_hibernates
    {
        out.push(d.at_value(
            "/schedule/otherwise",
            "the fleet's template does not hibernate".into(),
            "needs `hibernation: true` in the template",
            Some("set `hibernation: true` (and `root_volume_gb`) in the template, or use `otherwise: stopped`".into()),
        ));
    }
    let windows = schedule
        .get("running")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    out.extend(window_problems(d, &windows));
    out
}

/// The windows' problems: times that are not times, a window that ends before it
/// starts, windows of a day that overlap.
fn window_problems(d: &Document, windows: &[Value]) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut parsed: Vec<(usize, Vec<String>, u16, u16)> = Vec::new();
    for (i, w) in windows.iter().enumerate() {
        let time =
            |key: &str, end: bool, out: &mut Vec<Problem>| {
                let text = w.get(key)?.as_str()?;
                let t = parse_time(text, end);
                if t.is_none() {
                    out.push(d.at_value(
                    &format!("/schedule/running/{i}/{key}"),
                    format!("`{text}` is not a time of day"),
                    "not HH:MM",
                    Some(format!(
                        "write hours and minutes on the 24-hour clock, such as 09:00 or 13:30{}",
                        if end { "; 24:00 is midnight at the end of the day" } else { "" }
                    )),
                ));
                }
                t
            };
        let (from, to) = (time("from", false, &mut out), time("to", true, &mut out));
        let (Some(from), Some(to)) = (from, to) else {
            continue;
        };
        if to <= from {
            out.push(d.at_value(
                &format!("/schedule/running/{i}/to"),
                format!("the window ends at {} before it starts at {}", clock(to), clock(from)),
                "not after `from`",
                Some("a window ends after it starts, on the same day; one that runs past midnight is two windows: `to: \"24:00\"` on the first day and `from: \"00:00\"` on the next".into()),
            ));
            continue;
        }
        let days: Vec<String> = w
            .get("days")
            .and_then(Value::as_array)
            .map(|d| {
                d.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        for (j, other_days, of, ot) in &parsed {
            let shared: Vec<&String> = days.iter().filter(|d| other_days.contains(d)).collect();
            if let Some(day) = shared.first()
                && from < *ot
                && *of < to
            {
                out.push(d.at_value(
                    &format!("/schedule/running/{i}"),
                    format!(
                        "this window ({} {}-{}) overlaps window {} ({} {}-{})",
                        title(day),
                        clock(from),
                        clock(to),
                        j + 1,
                        title(day),
                        clock(*of),
                        clock(*ot)
                    ),
                    "overlaps an earlier window",
                    Some("windows of the same day must not overlap: join them into one, or move one".into()),
                ));
                break;
            }
        }
        parsed.push((i, days, from, to));
    }
    out
}

/// A day's name as plans show it: `mon` → `Mon`.
fn title(day: &str) -> String {
    let mut c = day.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn zone_hint(zone: &str) -> String {
    let names: Vec<String> = jiff::tz::db()
        .available()
        .map(|n| n.as_str().to_string())
        .collect();
    let lower = zone.to_lowercase();
    let same_case = names.iter().find(|n| n.to_lowercase() == lower);
    match same_case.cloned().or_else(|| did_you_mean(zone, &names)) {
        Some(close) => format!("did you mean `{close}`?"),
        None => "use an IANA time zone name, such as America/Chicago, Europe/Berlin or UTC".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_hh_mm_on_the_24_hour_clock() {
        assert_eq!(parse_time("09:00", false), Some(540));
        assert_eq!(parse_time("23:59", false), Some(1439));
        assert_eq!(parse_time("24:00", true), Some(1440));
        for bad in [
            "24:00", "9:00", "09:60", "09-00", "0900", "", "ab:cd", "+9:00",
        ] {
            assert_eq!(parse_time(bad, false), None, "{bad}");
        }
        assert_eq!(clock(735), "12:15");
    }

    #[test]
    fn hours_per_week_count_each_day_once() {
        let w = Window {
            name: "x".into(),
            days: vec![Day::Mon, Day::Wed, Day::Mon],
            from: 540,
            to: 735,
        };
        assert_eq!(w.hours_per_week(), 6.5);
    }

    mod diagnostics {
        use std::path::Path;

        /// The `line:column: message` of each problem of a manifest with `extra`.
        fn problems(extra: &str) -> Vec<String> {
            let text = format!(
                "name: cs\nproject: p\ntemplate: t\ncount: 2\n{extra}templates:\n  t: {{image: ami-1, instance_type: t3.micro}}\n"
            );
            let err = crate::manifest::parse(Path::new("c.yaml"), &text).expect_err("invalid");
            err.problems()
                .iter()
                .map(|p| {
                    let hint = p.hint.as_deref().unwrap_or("");
                    format!("{}:{}: {} | {hint}", p.line, p.column, p.message)
                })
                .collect()
        }

        #[test]
        fn invalid_schedules_are_located() {
            let found = problems(
                "schedule:\n  timezone: America/Chicgo\n  running:\n    - {days: [mon, wed], from: \"09:00\", to: \"12:15\"}\n    - {days: [wed, fry], from: \"12:00\", to: \"13:00\"}\n    - {days: [thu], from: \"14:00\", to: \"13:00\"}\n    - {days: [fri], from: \"9:00\", to: \"25:00\"}\n  otherwise: hibernated\nstate: running\n",
            );
            let expected = [
                "6:13: unknown time zone `America/Chicgo` | did you mean `America/Chicago`?",
                "9:7: this window (Wed 12:00-13:00) overlaps window 1 (Wed 09:00-12:15)",
                "9:20: `fry` is not one of mon, tue, wed, thu, fri, sat, sun | did you mean `fri`?",
                "10:40: the window ends at 13:00 before it starts at 14:00",
                "11:27: `9:00` is not a time of day",
                "11:39: `25:00` is not a time of day",
                "12:14: the fleet's template does not hibernate",
                "13:1: `state` and `schedule` cannot both be set",
            ];
            assert_eq!(found.len(), expected.len(), "{found:#?}");
            for (f, e) in found.iter().zip(expected) {
                assert!(f.starts_with(e), "{f}\n  expected {e}");
            }
        }

        #[test]
        fn members_file_is_exclusive_with_members_and_count() {
            let found = problems("members_file: r.csv\nmembers_column: email\n");
            assert!(
                found[0].starts_with("5:1: `count` and `members_file` cannot both be set"),
                "{found:?}"
            );
            let found = problems("members_column: email\n");
            assert!(
                found[0].starts_with("5:1: `members_column` without `members_file`"),
                "{found:?}"
            );
        }
    }
}
