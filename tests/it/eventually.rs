//! Waiting for a state instead of for a fixed time: [`eventually`] polls a check until
//! it holds, and fails naming what it waited for and what it saw last.

use std::path::Path;
use std::time::{Duration, Instant};

/// How often a check is polled.
const EVERY: Duration = Duration::from_millis(150);

/// What a check answers: the value waited for, or not yet.
pub trait Seen {
    type Value;
    /// The value, or what was seen instead (said when the deadline passes).
    fn seen(self) -> Result<Self::Value, String>;
}

impl<T> Seen for Option<T> {
    type Value = T;
    fn seen(self) -> Result<T, String> {
        self.ok_or_else(|| "nothing".to_string())
    }
}

/// `Err` holds what was seen instead.
impl<T, E: std::fmt::Display> Seen for Result<T, E> {
    type Value = T;
    fn seen(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

fn timed_out(what: &str, deadline: Duration, seen: &str) -> ! {
    panic!("{what}: not within {deadline:?}; last seen:\n{seen}")
}

/// Polls `check` every 150 ms until it answers `Some` (or `Ok`), and returns that value;
/// panics after `deadline` with `what` and the last state seen (`Err`'s).
pub fn eventually<S: Seen>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> S,
) -> S::Value {
    let began = Instant::now();
    loop {
        match check().seen() {
            Ok(v) => return v,
            Err(seen) if began.elapsed() >= deadline => timed_out(what, deadline, &seen),
            Err(_) => std::thread::sleep(EVERY),
        }
    }
}

/// [`eventually`] for a check that awaits (the emulator through the AWS SDK, say).
pub async fn eventually_async<S: Seen>(
    what: &str,
    deadline: Duration,
    mut check: impl AsyncFnMut() -> S,
) -> S::Value {
    let began = Instant::now();
    loop {
        match check().await.seen() {
            Ok(v) => return v,
            Err(seen) if began.elapsed() >= deadline => timed_out(what, deadline, &seen),
            Err(_) => tokio::time::sleep(EVERY).await,
        }
    }
}

/// A check: the text of the file at `path` once it contains every one of `needles`,
/// else what it holds so far.
pub fn file_contains(path: &Path, needles: &[&str]) -> Result<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    if needles.iter().all(|n| text.contains(n)) {
        Ok(text)
    } else {
        Err(text)
    }
}

#[test]
fn returns_the_value_once_the_check_holds() {
    let mut calls = 0;
    let got = eventually("the third call", Duration::from_secs(5), || {
        calls += 1;
        (calls == 3).then_some(calls * 10)
    });
    assert_eq!((got, calls), (30, 3));
}

#[test]
#[should_panic(expected = "the answer: not within 300ms; last seen:\nstill 41")]
fn fails_naming_what_it_waited_for_and_what_it_saw_last() {
    eventually("the answer", Duration::from_millis(300), || {
        Err::<u32, _>("still 41")
    });
}

#[tokio::test]
async fn the_async_check_is_awaited_each_time() {
    let mut calls = 0;
    let got = eventually_async("the second call", Duration::from_secs(5), async || {
        tokio::task::yield_now().await;
        calls += 1;
        if calls == 2 {
            Ok("done")
        } else {
            Err("not yet")
        }
    })
    .await;
    assert_eq!((got, calls), ("done", 2));
}
