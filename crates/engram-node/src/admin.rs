//! Local administration: commands an operator runs on the node's own store
//! (the data directory or the shared PostgreSQL), without the HTTP API. The
//! console acts as an admin of the tenant, by virtue of holding the store's
//! credentials; the engine's rules (hashed keys, audit events) still apply.

use engram_core::requests::AuditBundle;
use engram_core::{NewApiKey, Permission, Principal, Role, StoreAdmin, VerifyReport};
use std::path::Path;

use crate::config::Config;
use crate::error::{Context, Error, Result};

/// `engram keys ...`.
pub enum KeyCommand {
    Create {
        name: String,
        /// admin, writer or reader.
        role: String,
        namespaces: Vec<String>,
        permissions: Vec<String>,
    },
    List,
    Revoke {
        id: String,
    },
}

/// The operator at the console.
fn console(cfg: &Config, tenant: Option<String>) -> Principal {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    Principal::new(
        tenant.unwrap_or_else(|| cfg.tenant.clone()),
        format!("cli:{user}"),
        Role::Admin,
    )
}

async fn admin(cfg: &Config) -> Result<StoreAdmin> {
    Ok(StoreAdmin::new(crate::open::open_store(cfg).await?.0))
}

/// Run a key command for `tenant` (default: the configured one); the
/// result as the API would show it (a created key's secret appears once).
pub async fn keys(
    cfg: &Config,
    tenant: Option<String>,
    cmd: KeyCommand,
) -> Result<serde_json::Value> {
    let admin = admin(cfg).await?;
    let p = console(cfg, tenant);
    let out = match cmd {
        KeyCommand::Create {
            name,
            role,
            namespaces,
            permissions,
        } => {
            let role = Role::parse(&role).ok_or_else(|| {
                Error::Refused(format!(
                    "unknown role {role:?}: use admin, writer or reader"
                ))
            })?;
            let permissions = permissions
                .iter()
                .map(|s| {
                    Permission::parse(s)
                        .ok_or_else(|| Error::Refused(format!("unknown permission {s:?}")))
                })
                .collect::<Result<Vec<_>>>()?;
            let req = NewApiKey {
                name,
                role,
                namespaces: (!namespaces.is_empty()).then_some(namespaces),
                permissions,
            };
            json(
                admin
                    .create_api_key(&p, req, engram_auth::apikey::mint())
                    .await?,
            )
        }
        KeyCommand::List => serde_json::json!({ "keys": admin.api_keys(&p).await? }),
        KeyCommand::Revoke { id } => json(admin.revoke_api_key(&p, &id).await?),
    };
    Ok(out)
}

fn json(v: impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(v).expect("API views serialize")
}

/// Verify `tenant`'s audit hash chain.
pub async fn verify_audit(cfg: &Config, tenant: Option<String>) -> Result<VerifyReport> {
    let admin = admin(cfg).await?;
    Ok(admin.verify_audit(&console(cfg, tenant)).await?)
}

/// Write `tenant`'s audit proof bundle to `out`, whole or not at all (a
/// proof cut short by a crash is useless).
pub async fn export_audit(cfg: &Config, tenant: Option<String>, out: &Path) -> Result<AuditBundle> {
    let admin = admin(cfg).await?;
    let bundle = admin.audit_bundle(&console(cfg, tenant)).await?;
    let bytes = serde_json::to_vec_pretty(&bundle).context("encoding the bundle")?;
    engram_fs::write_atomic(out, &bytes).with_context(|| format!("writing {}", out.display()))?;
    Ok(bundle)
}
