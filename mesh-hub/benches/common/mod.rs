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

    /// CPU time (user + system) the hub process has used so far (Linux; zero elsewhere).
    #[allow(dead_code)] // not every benchmark reports it
    pub fn cpu_time(&self) -> std::time::Duration {
        cpu_time_of(&self.child.id().to_string())
    }
}

/// CPU time (user + system) process `pid` (or `self`) has used so far, from `/proc/PID/stat`
/// (Linux; zero elsewhere), at the resolution of the kernel's clock ticks.
#[allow(dead_code)] // not every benchmark reports it
pub fn cpu_time_of(pid: &str) -> std::time::Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces, in parentheses): utime and
    // stime are the 12th and 13th of them.
    let ticks: u64 = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|v| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    std::time::Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64)
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`; 100 when that cannot be run).
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
