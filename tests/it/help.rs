//! `--help` of every command, snapshot-tested, so a change of any help text is seen.

use clap::CommandFactory;

use crate::emulator::prism_command;

fn paths(cmd: &clap::Command, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(prefix.clone());
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let mut p = prefix.clone();
        p.push(sub.get_name().to_string());
        paths(sub, p, out);
    }
}

#[test]
fn help_of_every_command() {
    let mut all = Vec::new();
    paths(&prism::cli::Cli::command(), vec![], &mut all);
    assert!(all.len() > 10, "found {} commands", all.len());
    for path in all {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let out = prism_command(&args).env("COLUMNS", "100").output().unwrap();
        assert!(out.status.success(), "prism {}", args.join(" "));
        let name = if path.is_empty() {
            "prism".to_string()
        } else {
            format!("prism-{}", path.join("-"))
        };
        insta::assert_snapshot!(name, String::from_utf8_lossy(&out.stdout));
    }
}

#[test]
fn completion_scripts_ask_prism() {
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let out = prism_command(&["completion", shell]).output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("COMPLETE") && text.contains("prism"),
            "{shell}: {text}"
        );
    }
}

fn complete(
    emu: &crate::emulator::Emulator,
    cache: &std::path::Path,
    words: &[&str],
) -> Vec<String> {
    let mut args = vec!["--", "prism"];
    args.extend(words);
    let out = prism_command(&args)
        .env("AWS_ENDPOINT_URL", &emu.url)
        .env("COMPLETE", "bash")
        .env("_CLAP_COMPLETE_INDEX", words.len().to_string())
        .env("XDG_CACHE_HOME", cache)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn bash_completes_commands_flags_and_workspace_names_from_the_account() {
    let emu = crate::emulator::Emulator::start();
    crate::emulator::launch(&emu.ec2(), Some("cs"), Some("cs-01"), "t3.micro", 1).await;
    crate::emulator::launch(&emu.ec2(), Some("cs"), Some("cs-02"), "t3.micro", 1).await;
    let cache = tempfile::tempdir().unwrap();
    assert!(complete(&emu, cache.path(), &["work"]).contains(&"workspace".to_string()));
    assert_eq!(
        complete(&emu, cache.path(), &["workspace", "delete", "cs-"]),
        ["cs-01", "cs-02"]
    );
    assert_eq!(
        complete(&emu, cache.path(), &["workspace", "list", "--format", ""]),
        ["table", "json", "yaml"]
    );
    assert!(
        cache.path().join("prism/completion.json").exists(),
        "names are cached"
    );
    emu.clear_calls();
    assert_eq!(
        complete(&emu, cache.path(), &["workspace", "show", "cs-0"]),
        ["cs-01", "cs-02"]
    );
    assert!(
        emu.calls().is_empty(),
        "a second TAB within a minute uses the cache"
    );
}

#[test]
fn man_pages_are_written_per_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = prism_command(&["man", "--out", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    for page in [
        "prism.1",
        "prism-plan.1",
        "prism-apply.1",
        "prism-quota-request.1",
    ] {
        assert!(dir.path().join(page).exists(), "no {page}");
    }
}

/// A failure of any command asked for `--format json` is a JSON object on stdout.
#[test]
fn every_json_failure_is_json_on_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yaml");
    let m = missing.to_str().unwrap();
    for args in [
        vec!["plan", m, "--format", "json"],
        vec!["apply", m, "--format", "json", "--yes"],
        vec!["validate", m, "--format", "json"],
        vec!["workspace", "list", "--format", "json"],
        vec!["workspace", "show", "nope", "--format", "json"],
        vec!["workspace", "start", "nope", "--format", "json"],
        vec!["workspace", "delete", "nope", "--format", "json", "--yes"],
        vec!["storage", "list", "--format", "json"],
        vec!["quota", "show", "--format", "json"],
        vec!["quota", "alerts", "--format", "json"],
        vec!["quota", "request", "list", "--format", "json"],
        vec!["template", "list", "--file", m, "--format", "json"],
        vec!["template", "show", "t", "--file", m, "--format", "json"],
        vec!["list", "--format", "json"],
    ] {
        // No region: every command that calls AWS fails before its first call.
        let out = crate::emulator::prism_command(&args)
            .env_remove("AWS_REGION")
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {text}"));
        assert!(
            v["error"]["code"].is_string() && v["error"]["title"].is_string(),
            "{args:?}: {v}"
        );
    }
}
