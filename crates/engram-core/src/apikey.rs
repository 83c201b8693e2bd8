//! API key records: what the store keeps of a key (never its secret) and
//! what an admin asks for. The token format, minting and checking a
//! presented token live in `engram_auth::apikey`, beside the JWT verifier.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::types::{Permission, Role};

/// A stored API key (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiKey {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<String>>,
    pub permissions: Vec<Permission>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
    /// Hex SHA-256 of the secret.
    #[serde(skip)]
    pub secret_hash: String,
}

/// What an admin asks for when creating a key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewApiKey {
    pub name: String,
    pub role: Role,
    #[serde(default)]
    pub namespaces: Option<Vec<String>>,
    #[serde(default)]
    pub permissions: Vec<Permission>,
}

/// A freshly created key: the only time the token is available.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub key: ApiKey,
    /// Send as `Authorization: Bearer <token>`; it is not stored and cannot be shown again.
    pub token: String,
}

/// A fresh credential, as `engram_auth::apikey::mint` makes it: the key id,
/// the token to hand out once, and the hash of its secret to store.
#[derive(Debug, Clone)]
pub struct MintedKey {
    pub id: String,
    pub token: String,
    pub secret_hash: String,
}
