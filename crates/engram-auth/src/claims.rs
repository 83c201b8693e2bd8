//! Mapping verified claims to a [`Principal`].

use engram_core::{Permission, Principal, Role};
use serde_json::{Map, Value};

use crate::error::{clip, AuthError};

/// Longest accepted tenant id, in characters.
pub const MAX_TENANT_CHARS: usize = 128;

/// Builds the principal from claims whose signature and times were already checked.
pub(crate) fn principal(
    claims: &Map<String, Value>,
    tenant_claim: &str,
    role_claim: &str,
) -> Result<Principal, AuthError> {
    let subject = required_str(claims, "sub")?;
    let tenant = required_str(claims, tenant_claim)?;
    // Tenants key storage and appear in logs: bound them and keep them printable.
    if tenant.chars().count() > MAX_TENANT_CHARS || tenant.chars().any(char::is_control) {
        return Err(AuthError::InvalidClaims(format!(
            "{tenant_claim} must be at most {MAX_TENANT_CHARS} characters, without control characters"
        )));
    }
    let role = Role::parse(required_str(claims, role_claim)?).ok_or_else(|| {
        AuthError::InvalidClaims(format!("{role_claim} must be admin, writer or reader"))
    })?;
    let namespaces = claims
        .get("namespaces")
        .map(|v| string_array(v, "namespaces"))
        .transpose()?;
    let mut permissions = Vec::new();
    if let Some(v) = claims.get("permissions") {
        for p in string_array(v, "permissions")? {
            let perm = Permission::parse(&p).ok_or_else(|| {
                AuthError::InvalidClaims(format!("unknown permission {:?}", clip(&p)))
            })?;
            if !permissions.contains(&perm) {
                permissions.push(perm);
            }
        }
    }
    // Via `new` so that fields the engine adds later (request id, …) keep their defaults.
    let mut principal = Principal::new(tenant, subject, role);
    principal.namespaces = namespaces;
    principal.permissions = permissions;
    Ok(principal)
}

fn required_str<'a>(claims: &'a Map<String, Value>, name: &str) -> Result<&'a str, AuthError> {
    match claims.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(_) => Err(AuthError::InvalidClaims(format!(
            "{name} must be a non-empty string"
        ))),
        None => Err(AuthError::InvalidClaims(format!("missing claim {name}"))),
    }
}

fn string_array(v: &Value, name: &str) -> Result<Vec<String>, AuthError> {
    let bad = || AuthError::InvalidClaims(format!("{name} must be an array of non-empty strings"));
    v.as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|item| match item {
            Value::String(s) if !s.is_empty() => Ok(s.clone()),
            _ => Err(bad()),
        })
        .collect()
}
