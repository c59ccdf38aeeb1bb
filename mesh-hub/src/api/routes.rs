//! The route table behind OPTIONS: what each resource is and what it accepts.

use axum::http::header::ALLOW;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::api::json;
use crate::error::ApiError;

#[derive(Serialize)]
struct RouteDoc {
    resource: &'static str,
    description: &'static str,
    methods: &'static [&'static str],
    accepts: &'static [&'static str],
    produces: &'static [&'static str],
    query: &'static [&'static str],
}

const JSON: &[&str] = &["application/json"];
const JSON_ATOM: &[&str] = &["application/json", "application/atom+xml"];
const NONE: &[&str] = &[];
const PACK: &[&str] = &["application/x-mesh-pack"];
const HASHES: &[&str] = &["application/x-mesh-hashes"];
const OCTETS: &[&str] = &["application/octet-stream"];
const LIST_QUERY: &[&str] = &["$top", "$skip", "$orderby", "$filter"];

const ROUTES: &[RouteDoc] = &[
    RouteDoc {
        resource: "/mesh",
        description: "the caller's mesh: user, device, hub replica and links",
        methods: &["GET", "OPTIONS"],
        accepts: NONE,
        produces: JSON,
        query: NONE,
    },
    RouteDoc {
        resource: "/mesh/me",
        description: "who the bearer token stands for: user and device",
        methods: &["GET", "OPTIONS"],
        accepts: NONE,
        produces: JSON,
        query: NONE,
    },
    RouteDoc {
        resource: "/mesh/sync",
        description: "the sync protocol: POST one request, get its response",
        methods: &["POST", "OPTIONS"],
        accepts: JSON,
        produces: JSON,
        query: NONE,
    },
    RouteDoc {
        resource: "/mesh/notifications",
        description: "change notifications: server-sent events (Accept: text/event-stream) or a long-poll, resumable from a cursor",
        methods: &["GET", "OPTIONS"],
        accepts: NONE,
        produces: &["text/event-stream", "application/json"],
        query: &["cursor", "wait"],
    },
    RouteDoc {
        resource: "/mesh/devices",
        description: "the caller's devices; POST registers a new one with an enrollment code (no token needed) and returns its token",
        methods: &["GET", "POST", "OPTIONS"],
        accepts: JSON,
        produces: JSON,
        query: NONE,
    },
    RouteDoc {
        resource: "/mesh/devices/{device}",
        description: "one of the caller's devices; DELETE revokes it (itself at once, another device once a second device asks too)",
        methods: &["GET", "DELETE", "OPTIONS"],
        accepts: NONE,
        produces: JSON,
        query: NONE,
    },
    RouteDoc {
        resource: "/mesh/devices/codes",
        description: "POST mints a one-time enrollment code for a new device of the caller's user",
        methods: &["POST", "OPTIONS"],
        accepts: NONE,
        produces: JSON,
        query: NONE,
    },
    RouteDoc {
        resource: "/mesh/devices/{device}/confirm",
        description: "POST from another device vouches for a device enrolled by a code (revoking its enroller no longer revokes it)",
        methods: &["POST", "OPTIONS"],
        accepts: NONE,
        produces: NONE,
        query: NONE,
    },
    RouteDoc {
        resource: "/mesh/devices/{device}/certificate",
        description: "enrollment: POST the token's own device's public key, get its certificate and the authority's key",
        methods: &["POST", "OPTIONS"],
        accepts: JSON,
        produces: JSON,
        query: NONE,
    },
    RouteDoc {
        resource: "/mesh/invitations",
        description: "folders the caller is invited to and has not answered",
        methods: &["GET", "OPTIONS"],
        accepts: NONE,
        produces: JSON,
        query: NONE,
    },
    RouteDoc {
        resource: "/mesh/invitations/{folder}/{answer}",
        description: "answer an invitation: answer is accept or decline",
        methods: &["POST", "OPTIONS"],
        accepts: NONE,
        produces: JSON,
        query: NONE,
    },
    RouteDoc {
        resource: "/mesh/news",
        description: "activity of every folder the caller belongs to, newest first",
        methods: &["GET", "OPTIONS"],
        accepts: NONE,
        produces: JSON,
        query: &["$top"],
    },
    RouteDoc {
        resource: "/mesh/folders",
        description: "the folders the caller is an active member of; POST creates one",
        methods: &["GET", "POST", "OPTIONS"],
        accepts: JSON,
        produces: JSON,
        query: NONE,
    },
    RouteDoc {
        resource: "/mesh/folders/{folder}",
        description: "a folder's record; DELETE deletes the folder (owners)",
        methods: &["GET", "DELETE", "OPTIONS"],
        accepts: NONE,
        produces: JSON,
        query: NONE,
    },
    RouteDoc {
        resource: "/mesh/folders/{folder}/members",
        description: "a folder's members and invitations; POST invites a user with a role",
        methods: &["GET", "POST", "OPTIONS"],
        accepts: JSON,
        produces: JSON,
        query: NONE,
    },
    RouteDoc {
        resource: "/mesh/folders/{folder}/members/{user}",
        description: "one member; PUT changes the role (owners), DELETE removes the member or leaves",
        methods: &["GET", "PUT", "DELETE", "OPTIONS"],
        accepts: JSON,
        produces: JSON,
        query: NONE,
    },
    RouteDoc {
        resource: "/mesh/folders/{folder}/mappings",
        description: "which devices replicate the folder, and where",
        methods: &["GET", "OPTIONS"],
        accepts: NONE,
        produces: JSON,
        query: NONE,
    },
    RouteDoc {
        resource: "/mesh/folders/{folder}/mappings/{device}",
        description: "one device's mapping; PUT maps one of the caller's devices, DELETE unmaps",
        methods: &["GET", "PUT", "DELETE", "OPTIONS"],
        accepts: JSON,
        produces: JSON,
        query: NONE,
    },
    RouteDoc {
        resource: "/mesh/folders/{folder}/news",
        description: "the folder's activity, newest first",
        methods: &["GET", "OPTIONS"],
        accepts: NONE,
        produces: JSON,
        query: &["$top"],
    },
    RouteDoc {
        resource: "/mesh/folders/{folder}/feeds",
        description: "the folder's application feeds; POST creates one",
        methods: &["GET", "POST", "OPTIONS"],
        accepts: JSON,
        produces: JSON,
        query: NONE,
    },
    RouteDoc {
        resource: "/mesh/folders/{folder}/feeds/{feed}",
        description: "one feed: its record, head and size",
        methods: &["GET", "OPTIONS"],
        accepts: NONE,
        produces: JSON,
        query: NONE,
    },
    RouteDoc {
        resource: "/mesh/folders/{folder}/feeds/{feed}/entries",
        description: "a feed's entries; POST JSON creates one, POST a FeedSync Atom feed merges it",
        methods: &["GET", "POST", "OPTIONS"],
        accepts: JSON_ATOM,
        produces: JSON_ATOM,
        query: LIST_QUERY,
    },
    RouteDoc {
        resource: "/mesh/folders/{folder}/feeds/{feed}/entries/{entry}",
        description: "one entry with its ETag; PUT writes a new version, DELETE leaves a tombstone (If-Match honoured)",
        methods: &["GET", "PUT", "DELETE", "OPTIONS"],
        accepts: JSON,
        produces: JSON_ATOM,
        query: NONE,
    },
    RouteDoc {
        resource: "/mesh/folders/{folder}/feeds/{feed}/changes",
        description: "the feed's changes after an opaque cursor, in change order, tombstones included",
        methods: &["GET", "OPTIONS"],
        accepts: NONE,
        produces: JSON_ATOM,
        query: &["cursor", "limit"],
    },
    RouteDoc {
        resource: "/mesh/folders/{folder}/objects",
        description: "blob objects (chunks, manifests): POST a pack (application/x-mesh-pack) to store its objects for the folder, all or none (authors and up)",
        methods: &["POST", "OPTIONS"],
        accepts: PACK,
        produces: NONE,
        query: NONE,
    },
    RouteDoc {
        resource: "/mesh/folders/{folder}/objects/missing",
        description: "POST a hash list (application/x-mesh-hashes, at most 65536): the hashes the folder lacks",
        methods: &["POST", "OPTIONS"],
        accepts: HASHES,
        produces: HASHES,
        query: NONE,
    },
    RouteDoc {
        resource: "/mesh/folders/{folder}/objects/fetch",
        description: "POST a hash list: a pack of the folder's objects among them, in order, up to 8 MiB (ask again for the rest); ?wait=<ms> waits for objects still uploading",
        methods: &["POST", "OPTIONS"],
        accepts: HASHES,
        produces: PACK,
        query: NONE,
    },
    RouteDoc {
        resource: "/mesh/folders/{folder}/objects/{object}",
        description: "one object's bytes by its 64 hex digits; ETag, Range, If-None-Match",
        methods: &["GET", "HEAD", "OPTIONS"],
        accepts: NONE,
        produces: OCTETS,
        query: NONE,
    },
    RouteDoc {
        resource: "/mesh/folders/{folder}/blobs/{manifest}",
        description: "a whole blob, assembled from the chunks its manifest lists; ETag, Range (resumable), If-None-Match",
        methods: &["GET", "HEAD", "OPTIONS"],
        accepts: NONE,
        produces: OCTETS,
        query: NONE,
    },
];

fn matches(template: &str, path: &str) -> bool {
    let mut t = template.split('/');
    let mut p = path.trim_end_matches('/').split('/');
    loop {
        match (t.next(), p.next()) {
            (None, None) => return true,
            (Some(ts), Some(ps)) => {
                let var = ts.starts_with('{');
                if (var && ps.is_empty()) || (!var && ts != ps) {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// The template of the resource at `path`, if the API has one.
pub(crate) fn template(path: &str) -> Option<&'static str> {
    ROUTES
        .iter()
        .find(|r| matches(r.resource, path))
        .map(|r| r.resource)
}

/// Describes the resource at `path`.
pub(crate) fn options(path: &str) -> Response {
    match ROUTES.iter().find(|r| matches(r.resource, path)) {
        Some(doc) => {
            let mut resp = json(StatusCode::OK, doc);
            if let Ok(v) = HeaderValue::from_str(&doc.methods.join(", ")) {
                resp.headers_mut().insert(ALLOW, v);
            }
            resp
        }
        None => ApiError::not_found("resource").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_whole_paths() {
        assert!(matches("/mesh/folders/{folder}", "/mesh/folders/abc"));
        assert!(matches("/mesh/folders/{folder}", "/mesh/folders/abc/"));
        assert!(!matches("/mesh/folders/{folder}", "/mesh/folders/"));
        assert!(!matches("/mesh/folders/{folder}", "/mesh/folders/a/b"));
        assert!(!matches("/mesh", "/meshy"));
    }
}
