//! The workspace's example programs (`bridge`, `fake_claude`, `channel_plugin`), as cargo builds them into
//! `<target>/<profile>/examples` next to the test executables.

use std::path::{Path, PathBuf};

/// The example program `name`, refusing one older than its sources: `cargo test --test NAME` does not
/// rebuild examples, and an outdated binary would test old code.
pub fn binary(name: &str) -> PathBuf {
    let test_exe = std::env::current_exe().expect("the test executable's path");
    // <target>/debug/deps/<test> → <target>/debug/examples/<name>
    let debug = test_exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in <target>/<profile>/deps");
    let binary = debug.join("examples").join(name);
    let build = "run `cargo build --workspace --examples` first";
    assert!(
        binary.is_file(),
        "{} does not exist: {build}",
        binary.display()
    );
    let built = modified(&binary);
    let mut sources = workspace_sources(name);
    while let Some(path) = sources.pop() {
        if path.is_dir() {
            sources.extend(
                std::fs::read_dir(&path)
                    .unwrap()
                    .map(|entry| entry.unwrap().path()),
            );
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            assert!(
                modified(&path) <= built,
                "{} is older than {}: {build}",
                binary.display(),
                path.display()
            );
        }
    }
    binary
}

/// What example `name` may be built from: the `src` folder of every package an example can depend on, and
/// the example's own file.
fn workspace_sources(name: &str) -> Vec<PathBuf> {
    // This crate lives in <root>/testing/harness.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the harness lives two folders below the workspace root");
    let mut packages = vec![root.to_path_buf()];
    // Not `testing`: no example is built from the test fixtures, and cargo would not rebuild one for them.
    for group in [
        "backends",
        "plugins",
        "protocols",
        "spawners",
        "stores",
        "transports",
    ] {
        if let Ok(members) = std::fs::read_dir(root.join(group)) {
            packages.extend(members.map(|member| member.unwrap().path()));
        }
    }
    let example = format!("{name}.rs");
    packages
        .iter()
        .flat_map(|package| [package.join("src"), package.join("examples").join(&example)])
        .filter(|path| path.exists())
        .collect()
}

fn modified(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path)
        .and_then(|meta| meta.modified())
        .unwrap()
}
