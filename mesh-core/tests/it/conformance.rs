//! The FeedSync conformance vectors: the shared ones and the project's own.

use std::path::{Path, PathBuf};

use mesh_core::conformance::{parse_vector, run_vector};

fn run_dir(dir: &Path) -> (usize, Vec<String>) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut failures = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let outcome = parse_vector(&text)
            .map_err(|e| e.to_string())
            .and_then(|v| run_vector(&v));
        if let Err(why) = outcome {
            failures.push(format!("{}: {why}", f.display()));
        }
    }
    (files.len(), failures)
}

/// Where the shared vectors are: `MESH_SHARED_VECTORS` if set (then they must be there), else
/// `../shared/conformance/feedsync` beside the clone if it exists. A fresh clone has neither;
/// CI runs the shared vectors as its own step (`.ci/run`, the `conformance` example) and sets
/// the variable for this test.
fn shared_vectors() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("MESH_SHARED_VECTORS") {
        return Some(PathBuf::from(dir));
    }
    let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/feedsync");
    beside.is_dir().then_some(beside)
}

#[test]
fn shared_feedsync_vectors_all_pass() {
    let Some(dir) = shared_vectors() else {
        eprintln!("skipped: no ../shared beside the clone and MESH_SHARED_VECTORS is not set");
        return;
    };
    let (n, failures) = run_dir(&dir);
    assert!(
        n >= 8,
        "expected the shared vectors in {}, found {n}",
        dir.display()
    );
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn own_vectors_all_pass() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let (n, failures) = run_dir(&dir);
    assert!(n >= 10);
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn a_wrong_expectation_fails() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let text = std::fs::read_to_string(dir.join("winner-later-when.json")).unwrap();
    // Claim that the earlier edit wins: the runner must say no.
    let tampered = text.replacen("\"B\"", "\"Q\"", 1);
    let v = parse_vector(&tampered).unwrap();
    assert!(run_vector(&v).is_err());
}

#[test]
fn malformed_vectors_are_typed_errors() {
    for bad in [
        "",
        "{",
        "[]",
        r#"{"op":"merge"}"#,
        r#"{"op":"explode","item":{}}"#,
    ] {
        let e = parse_vector(bad).unwrap_err();
        assert_eq!(e.code(), mesh_core::ErrorCode::InvalidJson, "{bad}");
    }
}
