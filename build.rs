//! What `prism --version` and `prism version` say about the build: the git commit, the
//! build date and the AWS SDK versions from Cargo.lock.
//!
//! The script reruns only when HEAD moves (its file and the branch ref it names), when
//! Cargo.lock changes, or when SOURCE_DATE_EPOCH does; a commit rebuilds the prism crate
//! alone, and an edit to a source file does not rerun it. The build date is the date of
//! the build that ran it, or SOURCE_DATE_EPOCH's (reproducible builds). Without a git
//! checkout (a source archive) the commit is "unknown".

use std::path::{Path, PathBuf};
use std::process::Command;

/// The crates whose versions `prism version --format json` reports.
const SDK_CRATES: [&str; 4] = [
    "aws-config",
    "aws-sdk-ec2",
    "aws-sdk-efs",
    "aws-sdk-servicequotas",
];

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");

    let commit = git_commit(&root).unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=PRISM_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=PRISM_BUILD_DATE={}", build_date());

    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap_or_default();
    let versions = locked_versions(&lock);
    let sdk: Vec<String> = SDK_CRATES
        .iter()
        .map(|name| {
            let version = versions
                .iter()
                .find(|(n, _)| n == name)
                .map_or("unknown", |(_, v)| v.as_str());
            format!("{name}={version}")
        })
        .collect();
    println!("cargo:rustc-env=PRISM_AWS_SDK_VERSIONS={}", sdk.join(","));

    let rustc = std::env::var_os("RUSTC")
        .and_then(|r| Command::new(r).arg("-V").output().ok())
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=PRISM_RUSTC={rustc}");
    println!(
        "cargo:rustc-env=PRISM_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
}

/// The commit checked out in `root`'s own git repository (not one `root` happens to sit
/// in), with the files whose change means a new commit watched; None without git or a
/// repository.
fn git_commit(root: &Path) -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let top = PathBuf::from(git(&["rev-parse", "--show-toplevel"])?);
    if top.canonicalize().ok()? != root.canonicalize().ok()? {
        return None;
    }
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    // HEAD (its own per worktree) and the branch ref it names: loose, or in packed-refs
    // until a commit writes it loose into its folder.
    let absolute = |p: String| {
        let p = PathBuf::from(p);
        if p.is_absolute() { p } else { root.join(p) }
    };
    let head = absolute(git(&["rev-parse", "--git-path", "HEAD"])?);
    watch(&head);
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        let loose = absolute(git(&["rev-parse", "--git-path", &branch])?);
        if loose.is_file() {
            watch(&loose);
        } else {
            if let Some(folder) = loose.parent().filter(|f| f.is_dir()) {
                watch(folder);
            }
            let packed = absolute(git(&["rev-parse", "--git-path", "packed-refs"])?);
            if packed.is_file() {
                watch(&packed);
            }
        }
    }
    Some(commit)
}

fn watch(path: &Path) {
    println!("cargo:rerun-if-changed={}", path.display());
}

/// The build date, YYYY-MM-DD in UTC: SOURCE_DATE_EPOCH's when set, else today's.
fn build_date() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        });
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// (name, version) of every package in a Cargo.lock.
fn locked_versions(lock: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut name = None;
    for line in lock.lines() {
        let value = |key: &str| {
            line.strip_prefix(key)
                .map(|v| v.trim().trim_matches('"').to_string())
        };
        if line.starts_with("[[package]]") {
            name = None;
        } else if let Some(n) = value("name = ") {
            name = Some(n);
        } else if let (Some(v), Some(n)) = (value("version = "), name.take()) {
            out.push((n, v));
        }
    }
    out
}
