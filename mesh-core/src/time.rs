//! Whole-second UTC timestamps.
//!
//! FeedSync compares history `when` values at whole-second precision, so mesh stores every time
//! as whole seconds since the Unix epoch and writes it as RFC 3339 UTC (`2007-01-19T00:14:38Z`).
//! The core never reads a clock: callers pass the current time in.
//!
//! ```
//! use mesh_core::time::Timestamp;
//! let t: Timestamp = "2007-01-19T00:14:38Z".parse().unwrap();
//! assert_eq!(t.to_string(), "2007-01-19T00:14:38Z");
//! // Offsets are normalised to UTC; fractions of a second are refused.
//! assert_eq!("2007-01-19T01:14:38+01:00".parse::<Timestamp>().unwrap(), t);
//! assert!("2007-01-19T00:14:38.5Z".parse::<Timestamp>().is_err());
//! ```

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{CoreError, Result};

/// A UTC instant with whole-second precision, from year 1 to year 9999.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp(i64);

/// Seconds from the epoch to 0001-01-01T00:00:00Z.
const MIN_SECS: i64 = -62_135_596_800;
/// Seconds from the epoch to 9999-12-31T23:59:59Z.
const MAX_SECS: i64 = 253_402_300_799;

impl Timestamp {
    /// The Unix epoch, 1970-01-01T00:00:00Z.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// A timestamp from seconds since the Unix epoch.
    pub fn from_unix(secs: i64) -> Result<Self> {
        if (MIN_SECS..=MAX_SECS).contains(&secs) {
            Ok(Timestamp(secs))
        } else {
            Err(CoreError::InvalidTime {
                value: secs.to_string(),
                reason: "outside the years 1 to 9999".into(),
            })
        }
    }

    /// Truncates a chrono time to whole seconds.
    pub fn from_datetime(t: DateTime<Utc>) -> Result<Self> {
        Timestamp::from_unix(t.timestamp())
    }

    /// Seconds since the Unix epoch.
    pub fn unix(self) -> i64 {
        self.0
    }

    /// This instant as a chrono time.
    pub fn to_datetime(self) -> DateTime<Utc> {
        // The range check in every constructor keeps this in chrono's range.
        DateTime::from_timestamp(self.0, 0).unwrap_or_default()
    }

    /// This instant plus `secs` seconds, saturating at the ends of the range.
    pub fn plus_secs(self, secs: i64) -> Self {
        Timestamp(self.0.saturating_add(secs).clamp(MIN_SECS, MAX_SECS))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            &self
                .to_datetime()
                .to_rfc3339_opts(SecondsFormat::Secs, true),
        )
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

impl FromStr for Timestamp {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| CoreError::InvalidTime {
            value: s.chars().take(64).collect(),
            reason: reason.into(),
        };
        let t = DateTime::parse_from_rfc3339(s).map_err(|e| bad(&e.to_string()))?;
        if t.timestamp_subsec_nanos() != 0 {
            return Err(bad("fractions of a second are not allowed"));
        }
        Timestamp::from_unix(t.timestamp()).map_err(|_| bad("outside the years 1 to 9999"))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_bounds() {
        for s in [
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "1970-01-01T00:00:00Z",
        ] {
            let t: Timestamp = s.parse().unwrap();
            assert_eq!(t.to_string(), s);
        }
        assert!(Timestamp::from_unix(MAX_SECS + 1).is_err());
        assert!(Timestamp::from_unix(MIN_SECS - 1).is_err());
        assert!("yesterday".parse::<Timestamp>().is_err());
        assert!("2007-01-19 00:14:38".parse::<Timestamp>().is_err());
        assert_eq!(Timestamp::EPOCH.plus_secs(i64::MAX).unix(), MAX_SECS);
    }
}
