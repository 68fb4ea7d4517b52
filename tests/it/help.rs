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
fn completion_scripts_know_the_commands() {
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let out = prism_command(&["completion", shell]).output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        for word in ["plan", "apply", "watch", "quota"] {
            assert!(text.contains(word), "{shell} completion lacks {word}");
        }
    }
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
