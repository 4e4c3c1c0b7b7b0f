//! `/api/policies[/{vhost}[/{name}]]` and `/api/operator-policies[...]`: RabbitMQ's
//! policies and operator policies, read by anyone who may see the vhost, set and
//! cleared by `policymaker`s of the vhost (policies) or `administrator`s (both), as in
//! RabbitMQ. A policy set applies at once to the matching queues and exchanges (see
//! `crate::definitions::policy`).

use super::access::Caller;
use super::defs::created_or_updated;
use super::error::{body, ApiError};
use super::routing::Routes;
use super::Api;
use crate::definitions::policy::{effective, Target};
use crate::definitions::{ApplyTo, Policy, PolicyKind};
use crate::message::FieldTable;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

pub(crate) fn routes(r: &mut Routes) {
    r.get("/api/policies", list_all_policies)
        .get("/api/policies/{vhost}", list_vhost_policies)
        .get("/api/policies/{vhost}/{name}", get_policy)
        .put("/api/policies/{vhost}/{name}", put_policy)
        .delete("/api/policies/{vhost}/{name}", delete_policy)
        .get("/api/operator-policies", list_all_operator)
        .get("/api/operator-policies/{vhost}", list_vhost_operator)
        .get("/api/operator-policies/{vhost}/{name}", get_operator)
        .put("/api/operator-policies/{vhost}/{name}", put_operator)
        .delete("/api/operator-policies/{vhost}/{name}", delete_operator);
}

/// A policy in RabbitMQ's field names.
pub(crate) fn policy_json(vhost: &str, p: &Policy) -> Value {
    json!({
        "vhost": vhost,
        "name": p.name,
        "pattern": p.pattern,
        "apply-to": p.apply_to.as_str(),
        "definition": p.definition,
        "priority": p.priority,
    })
}

/// The policies of `kind` in `vhost`, by name.
pub(crate) async fn policies_in(
    api: &Api,
    vhost: &str,
    kind: PolicyKind,
) -> Result<Vec<Value>, ApiError> {
    let policies = api.shared.broker.policies(vhost).await?;
    Ok(policies
        .iter()
        .filter(|p| p.kind == kind)
        .map(|p| policy_json(vhost, p))
        .collect())
}

async fn list_all(api: &Api, caller: &Caller, kind: PolicyKind) -> HttpResponse {
    let mut out = Vec::new();
    for v in api.shared.broker.vhosts() {
        if caller.may_see(&v) {
            out.extend(policies_in(api, &v, kind).await.unwrap_or_default());
        }
    }
    HttpResponse::Ok().json(out)
}

async fn list_vhost(
    api: &Api,
    caller: &Caller,
    vhost: &str,
    kind: PolicyKind,
) -> Result<HttpResponse, ApiError> {
    caller.check_see(vhost)?;
    Ok(HttpResponse::Ok().json(policies_in(api, vhost, kind).await?))
}

async fn get_one(
    api: &Api,
    caller: &Caller,
    (vhost, name): (String, String),
    kind: PolicyKind,
) -> Result<HttpResponse, ApiError> {
    caller.check_see(&vhost)?;
    let policies = api.shared.broker.policies(&vhost).await?;
    let p = policies
        .iter()
        .find(|p| p.kind == kind && p.name == name)
        .ok_or_else(|| {
            ApiError::not_found(format!("no {} '{name}' in vhost '{vhost}'", kind.label()))
        })?;
    Ok(HttpResponse::Ok().json(policy_json(&vhost, p)))
}

/// Who may set and clear policies of `kind` in `vhost`: administrators; for policies
/// also `policymaker`s who may open the vhost.
fn check_policymaker(caller: &Caller, vhost: &str, kind: PolicyKind) -> Result<(), ApiError> {
    let policymaker = caller.user.tags.iter().any(|t| t == "policymaker");
    let allowed = caller.is_admin()
        || (kind == PolicyKind::Policy && policymaker && caller.may_change(vhost));
    if allowed {
        return Ok(());
    }
    tracing::warn!(user = %caller.user.name, %vhost, "management API: policy change refused");
    Err(ApiError::forbidden(format!(
        "changing {}s in vhost '{vhost}' refused for user '{}' (it needs the {} tag)",
        kind.label(),
        caller.user.name,
        match kind {
            PolicyKind::Policy => "policymaker or administrator",
            PolicyKind::Operator => "administrator",
        }
    )))
}

/// The body of a policy PUT (RabbitMQ's fields; `apply-to` defaults to `all`).
#[derive(Deserialize, Default)]
pub(crate) struct PolicyBody {
    /// The regular expression on names.
    pub pattern: Option<String>,
    /// The settings.
    #[serde(default)]
    pub definition: FieldTable,
    /// Higher wins.
    #[serde(default)]
    pub priority: i64,
    /// `queues`, `exchanges` or `all`.
    #[serde(rename = "apply-to")]
    pub apply_to: Option<String>,
}

impl PolicyBody {
    /// The policy this body describes, validated (400 naming what is wrong).
    pub(crate) fn into_policy(self, kind: PolicyKind, name: &str) -> Result<Policy, ApiError> {
        let pattern = self.pattern.ok_or_else(|| {
            ApiError::bad_request(format!(
                "{} '{name}': \"pattern\" is required",
                kind.label()
            ))
        })?;
        let default_to = match kind {
            PolicyKind::Policy => "all",
            PolicyKind::Operator => "queues",
        };
        // RabbitMQ's reason for a refused policy starts "Validation failed"; tools
        // (rabbitmqadmin) look for it.
        let invalid = |why: &str| ApiError::bad_request(format!("Validation failed: {why}"));
        let apply_to = ApplyTo::parse(self.apply_to.as_deref().unwrap_or(default_to))
            .map_err(|e| invalid(&format!("{} '{name}': {e}", kind.label())))?;
        Policy::new(
            kind,
            name,
            &pattern,
            apply_to,
            self.priority,
            self.definition,
        )
        .map_err(|e| invalid(e.message()))
    }
}

async fn put_one(
    api: &Api,
    caller: &Caller,
    (vhost, name): (String, String),
    raw: &[u8],
    kind: PolicyKind,
) -> Result<HttpResponse, ApiError> {
    check_policymaker(caller, &vhost, kind)?;
    let b: PolicyBody = body(raw)?;
    let policy = b.into_policy(kind, &name)?;
    let existed = !api.shared.broker.put_policy(&vhost, policy).await?;
    Ok(created_or_updated(existed))
}

async fn delete_one(
    api: &Api,
    caller: &Caller,
    (vhost, name): (String, String),
    kind: PolicyKind,
) -> Result<HttpResponse, ApiError> {
    check_policymaker(caller, &vhost, kind)?;
    api.shared.broker.clear_policy(&vhost, kind, &name).await?;
    Ok(HttpResponse::NoContent().finish())
}

type Named = web::Path<(String, String)>;

async fn list_all_policies(api: web::Data<Api>, caller: Caller) -> HttpResponse {
    list_all(&api, &caller, PolicyKind::Policy).await
}

async fn list_all_operator(api: web::Data<Api>, caller: Caller) -> HttpResponse {
    list_all(&api, &caller, PolicyKind::Operator).await
}

async fn list_vhost_policies(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String,)>,
) -> Result<HttpResponse, ApiError> {
    list_vhost(&api, &caller, &path.into_inner().0, PolicyKind::Policy).await
}

async fn list_vhost_operator(
    api: web::Data<Api>,
    caller: Caller,
    path: web::Path<(String,)>,
) -> Result<HttpResponse, ApiError> {
    list_vhost(&api, &caller, &path.into_inner().0, PolicyKind::Operator).await
}

async fn get_policy(
    api: web::Data<Api>,
    caller: Caller,
    path: Named,
) -> Result<HttpResponse, ApiError> {
    get_one(&api, &caller, path.into_inner(), PolicyKind::Policy).await
}

async fn get_operator(
    api: web::Data<Api>,
    caller: Caller,
    path: Named,
) -> Result<HttpResponse, ApiError> {
    get_one(&api, &caller, path.into_inner(), PolicyKind::Operator).await
}

async fn put_policy(
    api: web::Data<Api>,
    caller: Caller,
    path: Named,
    raw: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    put_one(&api, &caller, path.into_inner(), &raw, PolicyKind::Policy).await
}

async fn put_operator(
    api: web::Data<Api>,
    caller: Caller,
    path: Named,
    raw: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    put_one(&api, &caller, path.into_inner(), &raw, PolicyKind::Operator).await
}

async fn delete_policy(
    api: web::Data<Api>,
    caller: Caller,
    path: Named,
) -> Result<HttpResponse, ApiError> {
    delete_one(&api, &caller, path.into_inner(), PolicyKind::Policy).await
}

async fn delete_operator(
    api: web::Data<Api>,
    caller: Caller,
    path: Named,
) -> Result<HttpResponse, ApiError> {
    delete_one(&api, &caller, path.into_inner(), PolicyKind::Operator).await
}

/// Queue listings' JSON (`to_json` of each row) with RabbitMQ's `policy`,
/// `operator_policy` and `effective_policy_definition` added: what applies to each
/// queue now, worked out from its vhost's policies.
pub(crate) async fn queue_values(
    api: &Api,
    rows: &[super::stats::QueueRow],
    to_json: impl Fn(&super::stats::QueueRow) -> Value,
) -> Vec<Value> {
    let mut policies: std::collections::HashMap<&str, Vec<Policy>> =
        std::collections::HashMap::new();
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        if !policies.contains_key(row.vhost.as_str()) {
            // A vhost deleted meanwhile: no policy applies.
            let p = api
                .shared
                .broker
                .policies(&row.vhost)
                .await
                .unwrap_or_default();
            policies.insert(row.vhost.as_str(), p);
        }
        let mut v = to_json(row);
        let effective = effective(
            &policies[row.vhost.as_str()],
            &row.spec.name,
            Target::queue(&row.spec.arguments),
        );
        v["policy"] = json!(effective.policy);
        v["operator_policy"] = json!(effective.operator_policy);
        v["effective_policy_definition"] = json!(effective.definition);
        out.push(v);
    }
    out
}
