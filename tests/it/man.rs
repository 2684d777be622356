//! `rekey man`: a page for every command, generated from the same
//! definitions as `--help`.

use crate::support::*;

#[test]
fn man_writes_a_page_for_every_subcommand_with_its_example() {
    let dir = tempdir();
    let out = dir.path().join("man1");
    rekey()
        .args(["man", "--out-dir"])
        .arg(&out)
        .run()
        .code(0)
        .stdout_has("man pages");
    let help = rekey().arg("--help").run();
    let mut commands: Vec<String> = help
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() >= 15, "{commands:?}");
    commands.push("storage-diff".into());
    commands.push("keys-check".into());
    for c in &commands {
        let page = out.join(format!("rekey-{c}.1"));
        let text = std::fs::read_to_string(&page).unwrap_or_else(|_| panic!("no page {}", page.display()));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{} is not a man page",
            page.display()
        );
        assert!(text.contains("Example"), "{} shows no example", page.display());
        assert_eq!(mode(&page), 0o644);
    }
    assert!(out.join("rekey.1").is_file());
}
