//! What the hub benchmarks share: a `mesh-hub` process started for a run, and the flags that
//! keep its connection and rate limits out of the figures.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Thousands of streams and bursts of requests are a bench's load, not an attack: the
/// connection and rate limits stay out of its figures.
pub const NO_LIMITS: [&str; 6] = [
    "--max-connections",
    "16384",
    "--device-rate",
    "0",
    "--user-rate",
    "0",
];

/// A `mesh-hub` process, killed when dropped.
pub struct HubProcess {
    pub child: Child,
    pub url: String,
}

impl HubProcess {
    /// Starts `command` (a `mesh-hub` serving on some address) and reads the address it
    /// announces on its first line.
    pub fn spawn(mut command: Command) -> Result<HubProcess, Error> {
        let mut child = command.stdout(Stdio::piped()).spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
        let url = line
            .trim()
            .strip_prefix("mesh-hub listening on ")
            .ok_or("unexpected first line")?
            .to_owned();
        Ok(HubProcess { child, url })
    }

    /// Resident set size of the hub process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
