//! How a replica's values are kept in SQL columns, shared by the SQLite and PostgreSQL
//! stores: change-log positions, sync-state cursors, counts, and entries as checked JSON.

use mesh_core::model::Entry;
use mesh_core::store::Cursor;
use mesh_core::CoreError;

/// A change-log position as a column (positions past `i64::MAX` are never given out, so
/// clamping a query bound there changes nothing).
pub(crate) fn seq_to_sql(c: Cursor) -> i64 {
    i64::try_from(c.0).unwrap_or(i64::MAX)
}

/// A change-log position read back; a negative one is a damaged store.
pub(crate) fn seq_from_sql(engine: &str, v: i64) -> Result<Cursor, CoreError> {
    u64::try_from(v)
        .map(Cursor)
        .map_err(|_| CoreError::Store(format!("{engine}: invalid sequence number {v}")))
}

/// A sync-state cursor keeps all 64 bits (remotes hand out any `u64`); it is only compared
/// after being read back.
pub(crate) fn cursor_bits_to_sql(c: Cursor) -> i64 {
    i64::from_ne_bytes(c.0.to_ne_bytes())
}

/// A sync-state cursor read back.
pub(crate) fn cursor_bits_from_sql(v: i64) -> Cursor {
    Cursor(u64::from_ne_bytes(v.to_ne_bytes()))
}

/// A count or limit as a column value.
pub(crate) fn count_to_sql(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// An entry's stored JSON, checked to hold the entry its row says.
pub(crate) fn decode_entry(
    engine: &str,
    feed: &str,
    id: &str,
    body: &str,
) -> Result<Entry, CoreError> {
    let entry: Entry = serde_json::from_str(body).map_err(|e| {
        CoreError::Store(format!(
            "{engine}: entry {id:?} of {feed}: unreadable body: {e}"
        ))
    })?;
    if entry.sync.id.as_str() != id {
        return Err(CoreError::Store(format!(
            "{engine}: entry {id:?} of {feed}: body holds entry {:?}",
            entry.sync.id.as_str()
        )));
    }
    Ok(entry)
}
