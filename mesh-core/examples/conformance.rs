//! Runs every FeedSync conformance vector (`*.json`) in a directory.
//!
//! ```text
//! cargo run -q -p mesh-core --example conformance -- ../shared/conformance/feedsync
//! ```
//!
//! Prints one line per vector and closes with `N passed, M failed`; exits non-zero if any
//! vector fails or cannot be read.

use std::path::PathBuf;
use std::process::ExitCode;

use mesh_core::conformance::{parse_vector, run_vector};

fn main() -> ExitCode {
    let dirs: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if dirs.is_empty() {
        eprintln!("usage: conformance DIR [DIR...]");
        return ExitCode::from(2);
    }
    let (mut passed, mut failed) = (0usize, 0usize);
    for dir in dirs {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect(),
            Err(e) => {
                eprintln!("cannot read {}: {e}", dir.display());
                failed += 1;
                continue;
            }
        };
        files.sort();
        for path in files {
            let file = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let result = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read: {e}"))
                .and_then(|text| parse_vector(&text).map_err(|e| format!("cannot parse: {e}")))
                .and_then(|v| run_vector(&v).map(|()| v.name));
            match result {
                Ok(name) => {
                    passed += 1;
                    println!("ok     {file} ({name})");
                }
                Err(why) => {
                    failed += 1;
                    println!("FAILED {file}: {why}");
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 && passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
