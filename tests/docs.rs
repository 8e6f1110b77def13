//! Man pages and completions are generated from the current CLI (packaging/docs.rs, run by the
//! package build), never written by hand: every subcommand has its page and completion.

#[path = "../packaging/docs.rs"]
pub(crate) mod generator;

use crate::support::Result;

#[test]
fn man_pages_and_completions_cover_every_subcommand() -> Result {
    let dir = tempfile::tempdir()?;
    let written = generator::generate(dir.path())?;
    let mut command = outpost::cli::command();
    command.build();
    let subcommands: Vec<clap::Command> = command
        .get_subcommands()
        .filter(|s| s.get_name() != "help")
        .cloned()
        .collect();
    assert!(subcommands.len() >= 10, "{} subcommands", subcommands.len());
    let main_page = std::fs::read_to_string(dir.path().join("man/outpost.1"))?;
    for sub in &subcommands {
        let name = sub.get_name();
        let page = std::fs::read_to_string(dir.path().join(format!("man/outpost-{name}.1")))?;
        let about = sub.get_about().map(ToString::to_string).unwrap_or_default();
        let first_word = about.split_whitespace().next().unwrap_or_default();
        assert!(
            page.contains(&format!("outpost\\-{name}")) && page.contains(first_word),
            "the page of {name} does not describe it"
        );
        assert!(main_page.contains(name), "outpost.1 does not list {name}");
        for completion in ["outpost.bash", "_outpost", "outpost.fish"] {
            let text = std::fs::read_to_string(dir.path().join("completions").join(completion))?;
            assert!(text.contains(name), "{completion} does not complete {name}");
        }
    }
    assert_eq!(written.len(), subcommands.len() + 1 + 3);
    Ok(())
}
