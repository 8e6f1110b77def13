// Man pages and shell completions generated from the clap definition of the CLI: shared by
// `cargo run --example gen-docs -- DIR` (packaging) and the test that checks them.

use std::path::{Path, PathBuf};

/// Writes `outpost.1`, one `outpost-<command>.1` per subcommand, and completions for bash,
/// zsh and fish into `dir`; returns the files written.
pub fn generate(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    use clap_complete::Shell;
    std::fs::create_dir_all(dir.join("man"))?;
    std::fs::create_dir_all(dir.join("completions"))?;
    let mut command = outpost::cli::command();
    command.build();
    let mut written = Vec::new();
    let mut page = |cmd: &clap::Command, name: &str| -> std::io::Result<()> {
        let path = dir.join("man").join(format!("{name}.1"));
        let mut out = Vec::new();
        // clap keeps command names as &'static str; this runs once per page in a short-lived
        // generator, so leaking the name is fine.
        let name: &'static str = Box::leak(name.to_owned().into_boxed_str());
        clap_mangen::Man::new(cmd.clone().name(name)).render(&mut out)?;
        std::fs::write(&path, out)?;
        written.push(path);
        Ok(())
    };
    page(&command, "outpost")?;
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        page(sub, &format!("outpost-{}", sub.get_name()))?;
    }
    for (shell, name) in [
        (Shell::Bash, "outpost.bash"),
        (Shell::Zsh, "_outpost"),
        (Shell::Fish, "outpost.fish"),
    ] {
        let path = dir.join("completions").join(name);
        let mut file = std::fs::File::create(&path)?;
        clap_complete::generate(shell, &mut command.clone(), "outpost", &mut file);
        written.push(path);
    }
    Ok(written)
}
