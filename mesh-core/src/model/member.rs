//! Members, roles and the one permission check that the client and the hub both use.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};
use crate::id::UserId;
use crate::time::Timestamp;

/// A member's role in a folder, from least to most powerful.
///
/// * **Reader** reads.
/// * **Author** reads, creates entries, and changes or deletes the entries it authored.
/// * **Full** reads and writes every entry and invites Reader, Author and Full members.
/// * **Owner** does everything, including member management and deleting the folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads.
    Reader,
    /// Reads; creates entries; changes and deletes its own.
    Author,
    /// Reads and writes everything; invites up to Full.
    Full,
    /// Everything.
    Owner,
}

impl Role {
    /// The role's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Author => "author",
            Role::Full => "full",
            Role::Owner => "owner",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "reader" => Ok(Role::Reader),
            "author" => Ok(Role::Author),
            "full" => Ok(Role::Full),
            "owner" => Ok(Role::Owner),
            _ => Err(CoreError::InvalidId {
                kind: "role",
                reason: format!("{s:?} is not reader, author, full or owner"),
            }),
        }
    }
}

/// Where a membership stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvitationState {
    /// Invited, not yet accepted: the user cannot use the folder yet.
    Invited,
    /// Accepted: the role is in force.
    Active,
    /// Declined the invitation.
    Declined,
}

/// A folder member: an entry of the folder's `members` feed, keyed by user id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The member.
    pub user: UserId,
    /// The member's role.
    pub role: Role,
    /// Whether the invitation has been accepted.
    pub state: InvitationState,
    /// Who invited the member (the creator for the first owner).
    pub invited_by: UserId,
    /// When the invitation was made.
    pub invited_at: Timestamp,
}

impl Member {
    /// The role in force: `Some` only for active members.
    pub fn effective_role(&self) -> Option<Role> {
        (self.state == InvitationState::Active).then_some(self.role)
    }
}

/// Something a user wants to do in a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    /// Read the folder and its feeds.
    Read,
    /// Create an entry (or an application feed).
    CreateEntry,
    /// Update, delete or resolve an existing entry whose author is given.
    ChangeEntry {
        /// The entry's author.
        author: &'a UserId,
    },
    /// Invite a user with a role.
    Invite {
        /// The role offered.
        role: Role,
    },
    /// Change a member's role, or remove a member (leaving is [`Action::Leave`]).
    ManageMember {
        /// The member acted on.
        target: &'a UserId,
    },
    /// Leave the folder (remove oneself).
    Leave,
    /// Map the folder onto one of the user's own devices.
    Map,
    /// Delete the folder.
    DeleteFolder,
}

/// Decides whether `actor`, holding `role` in a folder (`None`: not an active member), may do
/// `action`. Both the client (before writing locally) and the hub (on every request) call this.
///
/// ```
/// use mesh_core::model::{authorize, Action, Role};
/// let me: mesh_core::id::UserId = "ann".parse().unwrap();
/// let other: mesh_core::id::UserId = "bob".parse().unwrap();
/// assert!(authorize(&me, Some(Role::Author), Action::ChangeEntry { author: &me }).is_ok());
/// assert!(authorize(&me, Some(Role::Author), Action::ChangeEntry { author: &other }).is_err());
/// assert!(authorize(&me, Some(Role::Reader), Action::CreateEntry).is_err());
/// assert!(authorize(&me, None, Action::Read).is_err());
/// ```
pub fn authorize(actor: &UserId, role: Option<Role>, action: Action<'_>) -> Result<()> {
    let Some(role) = role else {
        return Err(CoreError::PermissionDenied(format!(
            "{actor} is not a member of this folder"
        )));
    };
    let allowed = match action {
        Action::Read | Action::Leave | Action::Map => true,
        Action::CreateEntry => role >= Role::Author,
        Action::ChangeEntry { author } => {
            role >= Role::Full || (role == Role::Author && author == actor)
        }
        Action::Invite { role: offered } => match role {
            Role::Owner => true,
            Role::Full => offered <= Role::Full,
            Role::Author | Role::Reader => false,
        },
        Action::ManageMember { .. } => role == Role::Owner,
        Action::DeleteFolder => role == Role::Owner,
    };
    if allowed {
        Ok(())
    } else {
        Err(CoreError::PermissionDenied(format!(
            "{actor} ({role}) may not {}",
            describe(action)
        )))
    }
}

fn describe(action: Action<'_>) -> String {
    match action {
        Action::Read => "read".into(),
        Action::CreateEntry => "create entries".into(),
        Action::ChangeEntry { author } => format!("change entries authored by {author}"),
        Action::Invite { role } => format!("invite members as {role}"),
        Action::ManageMember { target } => format!("manage member {target}"),
        Action::Leave => "leave".into(),
        Action::Map => "map the folder".into(),
        Action::DeleteFolder => "delete the folder".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> UserId {
        s.parse().unwrap()
    }

    #[test]
    fn role_matrix() {
        let (me, other) = (u("me"), u("other"));
        let actions = [
            Action::Read,
            Action::CreateEntry,
            Action::ChangeEntry { author: &me },
            Action::ChangeEntry { author: &other },
            Action::Invite { role: Role::Reader },
            Action::Invite { role: Role::Full },
            Action::Invite { role: Role::Owner },
            Action::ManageMember { target: &other },
            Action::ManageMember { target: &me },
            Action::DeleteFolder,
        ];
        // Expected per role, in the order of `actions`.
        let table = [
            (Role::Reader, [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            (Role::Author, [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]),
            (Role::Full, [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]),
            (Role::Owner, [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]),
        ];
        for (role, expect) in table {
            for (a, e) in actions.iter().zip(expect) {
                assert_eq!(
                    authorize(&me, Some(role), *a).is_ok(),
                    e == 1,
                    "{role} {a:?}"
                );
            }
        }
        for a in actions {
            assert_eq!(
                authorize(&me, None, a).unwrap_err().code(),
                crate::error::ErrorCode::PermissionDenied
            );
        }
    }

    #[test]
    fn roles_parse_and_order() {
        assert_eq!("Owner".parse::<Role>().unwrap(), Role::Owner);
        assert!("admin".parse::<Role>().is_err());
        assert!(
            Role::Reader < Role::Author && Role::Author < Role::Full && Role::Full < Role::Owner
        );
    }
}
