//! Roles of admin accounts, and what each may do. API keys carry the same
//! permissions as scopes.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// One thing an admin or API key may do; as an API key scope it is written
/// as its string form (`events:read`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    EventsRead,
    UsersRead,
    UsersManage,
    TicketsRead,
    TicketsReply,
    LedgerRead,
    LedgerManage,
    StatsRead,
    WebhooksManage,
    TelegramSend,
    HelpdeskReply,
    ApiKeysManage,
    AdminsManage,
    SettingsManage,
}

impl Permission {
    pub const ALL: [Permission; 14] = [
        Self::EventsRead,
        Self::UsersRead,
        Self::UsersManage,
        Self::TicketsRead,
        Self::TicketsReply,
        Self::LedgerRead,
        Self::LedgerManage,
        Self::StatsRead,
        Self::WebhooksManage,
        Self::TelegramSend,
        Self::HelpdeskReply,
        Self::ApiKeysManage,
        Self::AdminsManage,
        Self::SettingsManage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::EventsRead => "events:read",
            Self::UsersRead => "users:read",
            Self::UsersManage => "users:manage",
            Self::TicketsRead => "tickets:read",
            Self::TicketsReply => "tickets:reply",
            Self::LedgerRead => "ledger:read",
            Self::LedgerManage => "ledger:manage",
            Self::StatsRead => "stats:read",
            Self::WebhooksManage => "webhooks:manage",
            Self::TelegramSend => "telegram:send",
            Self::HelpdeskReply => "helpdesk:reply",
            Self::ApiKeysManage => "api_keys:manage",
            Self::AdminsManage => "admins:manage",
            Self::SettingsManage => "settings:manage",
        }
    }

    /// Scopes an API key may carry: managing keys, admins and integration
    /// settings (which hold credentials) is left to people signed in as
    /// admins.
    pub fn grantable_to_api_keys(self) -> bool {
        !matches!(
            self,
            Self::ApiKeysManage | Self::AdminsManage | Self::SettingsManage
        )
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Permission {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown scope `{s}`"))
    }
}

impl Serialize for Permission {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Permission {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An admin account's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including managing admins.
    Owner,
    /// Everything but managing admins.
    Admin,
    /// Support: users and tickets (read, reply), the event feed.
    Operator,
    /// Reads everything an operator reads and the ledger and stats; changes nothing.
    Viewer,
}

impl Role {
    pub const ALL: [Role; 4] = [Self::Owner, Self::Admin, Self::Operator, Self::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Admin => "admin",
            Self::Operator => "operator",
            Self::Viewer => "viewer",
        }
    }

    pub fn permissions(self) -> Vec<Permission> {
        use Permission::*;
        match self {
            Self::Owner => Permission::ALL.to_vec(),
            Self::Admin => Permission::ALL
                .into_iter()
                .filter(|p| *p != AdminsManage)
                .collect(),
            Self::Operator => vec![EventsRead, UsersRead, TicketsRead, TicketsReply],
            Self::Viewer => vec![EventsRead, UsersRead, TicketsRead, LedgerRead, StatsRead],
        }
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role `{s}` (owner, admin, operator, viewer)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_through_their_names() {
        for p in Permission::ALL {
            assert_eq!(p.as_str().parse::<Permission>().unwrap(), p);
        }
        assert!("events:write".parse::<Permission>().is_err());
    }

    #[test]
    fn only_owners_manage_admins_and_viewers_change_nothing() {
        assert!(
            Role::Owner
                .permissions()
                .contains(&Permission::AdminsManage)
        );
        assert!(
            !Role::Admin
                .permissions()
                .contains(&Permission::AdminsManage)
        );
        for p in Role::Viewer.permissions() {
            assert!(p.as_str().ends_with(":read"), "{p}");
        }
    }
}
