//! `cargo run --example gen-docs -- DIR`: writes the man pages and shell completions of the
//! current CLI into DIR/man and DIR/completions (the package build runs it; nothing of it is
//! written by hand).

include!("docs.rs");

fn main() -> std::io::Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from("target/docs"), PathBuf::from);
    for path in generate(&dir)? {
        println!("{}", path.display());
    }
    Ok(())
}
