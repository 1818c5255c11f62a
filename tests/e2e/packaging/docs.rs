//! Shell completions and man pages are generated from the CLI definition
//! (`gapless completions <shell>`, `gapless man [subcommand]`) and shipped from
//! `packaging/completions/` and `packaging/man/`: these must match what the binary generates,
//! so a new flag cannot leave them stale. Run with `GAPLESS_REGENERATE=1` to rewrite them.

use super::packaging;

const BIN: &str = env!("CARGO_BIN_EXE_gapless");

fn generate(args: &[&str]) -> String {
    let out = std::process::Command::new(BIN).args(args).output().unwrap();
    assert!(out.status.success(), "gapless {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// (file under packaging/, the command that makes it).
fn files() -> Vec<(String, Vec<String>)> {
    let mut files = vec![
        (
            "completions/gapless.bash".to_string(),
            vec!["completions".into(), "bash".into()],
        ),
        (
            "completions/_gapless".to_string(),
            vec!["completions".into(), "zsh".into()],
        ),
        (
            "completions/gapless.fish".to_string(),
            vec!["completions".into(), "fish".into()],
        ),
        ("man/gapless.1".to_string(), vec!["man".into()]),
    ];
    for sub in [
        "run",
        "validate",
        "status",
        "top",
        "dead-letter",
        "verify-stream",
        "wal",
        "completions",
        "man",
    ] {
        files.push((
            format!("man/gapless-{sub}.1"),
            vec!["man".into(), sub.into()],
        ));
    }
    files
}

#[test]
fn completions_and_man_pages_match_the_cli() {
    let regenerate = std::env::var_os("GAPLESS_REGENERATE").is_some();
    let mut stale = Vec::new();
    for (file, args) in files() {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let fresh = generate(&args);
        assert!(fresh.len() > 200, "{file}: {fresh}");
        let path = packaging(&file);
        if regenerate {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &fresh).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(fresh.as_str()) {
            stale.push(file);
        }
    }
    assert!(
        stale.is_empty(),
        "stale: {stale:?}; run `GAPLESS_REGENERATE=1 cargo test -p gapless --test e2e completions_and_man_pages`"
    );
    // Every subcommand has its page: the list above is complete.
    let help = generate(&["--help"]);
    for (file, _) in files() {
        if let Some(sub) = file.strip_prefix("man/gapless-") {
            let sub = sub.trim_end_matches(".1");
            assert!(
                help.contains(&format!("  {sub} ")) || help.contains(&format!("  {sub}\n")),
                "{sub} not in --help"
            );
        }
    }
    let listed = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .count();
    assert_eq!(listed, files().len() - 4, "a subcommand without a man page");
}
