//! Writes what the package ships beside the binary: the man page (gzipped,
//! as Debian's policy asks) and the bash, zsh and fish completions, from the
//! same command-line definition `mgmt` parses with. They go in
//! `<target>/<profile>/deb-assets/`, where `cargo deb` finds them under the
//! `target/release/` prefix it maps to the real target directory, so
//! `cargo deb -p mgmt` alone builds the whole package.

use std::io::Write as _;
use std::path::{Path, PathBuf};

#[allow(dead_code)]
#[path = "src/args.rs"]
mod args;

use clap::CommandFactory as _;

fn main() -> std::io::Result<()> {
    println!("cargo::rerun-if-changed=src/args.rs");
    println!("cargo::rerun-if-changed=build.rs");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // OUT_DIR is <target>/<profile>/build/mgmt-<hash>/out.
    let profile_dir = out_dir
        .ancestors()
        .nth(3)
        .expect("OUT_DIR lies three levels below the profile's directory");
    let assets = profile_dir.join("deb-assets");
    std::fs::create_dir_all(&assets)?;

    let mut page = Vec::new();
    clap_mangen::Man::new(args::Cli::command()).render(&mut page)?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&page)?;
    write_if_changed(&assets.join("mgmt.1.gz"), &gz.finish()?)?;

    use clap_complete::Shell;
    for (shell, name) in [
        (Shell::Bash, "mgmt.bash"),
        (Shell::Zsh, "_mgmt"),
        (Shell::Fish, "mgmt.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut args::Cli::command(), "mgmt", &mut out);
        write_if_changed(&assets.join(name), &out)?;
    }
    Ok(())
}

/// Leaves an unchanged file alone (its time too), so rebuilds stay quiet.
fn write_if_changed(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    std::fs::write(path, bytes)
}
