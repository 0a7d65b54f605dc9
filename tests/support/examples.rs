//! The project's example programs, as `cargo test` builds them next to the test executables.

use std::path::{Path, PathBuf};

/// The example program `name` (`bridge`, `fake_claude`), refusing one older than its sources.
pub fn binary(name: &str) -> PathBuf {
    let test_exe = std::env::current_exe().expect("the test executable's path");
    // <target>/debug/deps/<test> → <target>/debug/examples/<name>
    let debug = test_exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in <target>/<profile>/deps");
    let binary = debug.join("examples").join(name);
    assert!(
        binary.is_file(),
        "{} does not exist: run `cargo build --examples` first",
        binary.display()
    );
    // `cargo test --test NAME` does not rebuild examples: refuse to test an outdated binary.
    let built = modified(&binary);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sources = vec![
        root.join("src"),
        root.join("examples").join(format!("{name}.rs")),
    ];
    for crates in [
        "backends",
        "plugins",
        "spawners",
        "stores",
        "testing",
        "transports",
    ] {
        for member in std::fs::read_dir(root.join(crates)).unwrap() {
            sources.push(member.unwrap().path().join("src"));
        }
    }
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
                "{} is older than {}: run `cargo build --examples` first",
                binary.display(),
                path.display()
            );
        }
    }
    binary
}

fn modified(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path)
        .and_then(|meta| meta.modified())
        .unwrap()
}
