//! The optional authorization mode: bearer-token users and RBAC evaluated from the stored
//! Roles, ClusterRoles and their bindings, with the real server's 401 and 403 answers — so a
//! least-privilege setup (the worker's ServiceAccount bound to a Role in its namespaces) can
//! be tested against what it may and may not do.
//!
//! Off by default (every request is allowed, as before). When on, a request is made by the
//! user of its `Authorization: Bearer <token>` (an unknown token is `401 Unauthorized`), or
//! by the built-in admin (group `system:masters`, the default kubeconfig's identity) when it
//! carries none — client-go sends no bearer token over plain HTTP, which is what kube-sim
//! serves. A request may act as another user with the impersonation headers
//! (`Impersonate-User`, `Impersonate-Group`): the kubeconfig's context for each configured
//! user sets `as`/`as-groups`, so `kubectl --context alice` and `helm --kube-context alice`
//! are alice; only `system:masters` may impersonate. The admin may do everything. Other
//! users may do what a binding grants them: ClusterRoleBindings everywhere, RoleBindings in
//! their namespace (to a Role there or a ClusterRole); subjects match by user name, by group
//! (every user is in `system:authenticated`), or, for kind `ServiceAccount`, a user named
//! `system:serviceaccount:<namespace>:<name>`. Non-resource paths (discovery, OpenAPI,
//! `/version`, health) are open to every authenticated user, as `system:discovery` grants.
//!
//! Simplifications: no escalation checks on writing Roles, no aggregated ClusterRoles, no
//! impersonation or SelfSubjectAccessReview.

use axum::http::{header, HeaderMap};
use serde_json::Value;

use crate::audit::RequestInfo;
use crate::resources;
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::store::Store;

/// The group whose members may do everything.
pub const MASTERS: &str = "system:masters";
/// The name of the built-in admin, whose token is the default kubeconfig's.
pub const ADMIN: &str = "kube-sim-admin";

/// A user the server knows by a bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub token: String,
    pub groups: Vec<String>,
}

impl User {
    /// Parses `TOKEN,NAME[,GROUP...]` (the `--rbac-user` flag; the order of the real API
    /// server's static token file, so ServiceAccount-style names with colons fit).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut parts = spec.split(',').map(str::trim);
        let token = parts.next().unwrap_or_default();
        let name = parts.next().unwrap_or_default();
        if name.is_empty() || token.is_empty() {
            return Err(format!("{spec:?} is not TOKEN,NAME[,GROUP...]"));
        }
        Ok(Self {
            name: name.into(),
            token: token.into(),
            groups: parts.filter(|g| !g.is_empty()).map(String::from).collect(),
        })
    }
}

/// Who may do what.
#[derive(Debug, Clone)]
pub struct Authorizer {
    users: Vec<User>,
}

/// What a resource request asks to do, in RBAC's terms.
struct Attributes<'a> {
    verb: &'a str,
    group: &'a str,
    resource: &'a str,
    subresource: &'a str,
    namespace: &'a str,
    name: &'a str,
}

impl Authorizer {
    /// The configured users plus the built-in admin with `admin_token`.
    pub fn new(users: Vec<User>, admin_token: &str) -> Self {
        let mut all = vec![User {
            name: ADMIN.into(),
            token: admin_token.into(),
            groups: vec![MASTERS.into()],
        }];
        all.extend(users);
        Self { users: all }
    }

    /// The users with tokens (for writing kubeconfig contexts).
    pub fn users(&self) -> &[User] {
        &self.users
    }

    /// Who the request is from: the user of its bearer token (an unknown one is the real
    /// server's 401) or the admin, then the user it impersonates, if any.
    fn authenticate(&self, headers: &HeaderMap) -> Result<User, ApiError> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or_default();
        let caller = if token.is_empty() {
            &self.users[0]
        } else {
            self.users
                .iter()
                .find(|u| u.token == token)
                .ok_or_else(ApiError::unauthorized)?
        };
        let Some(name) = headers
            .get("impersonate-user")
            .and_then(|v| v.to_str().ok())
        else {
            return Ok(caller.clone());
        };
        if !caller.groups.iter().any(|g| g == MASTERS) {
            return Err(ApiError::forbidden(
                "users",
                "",
                name,
                format!(
                    "users \"{name}\" is forbidden: User \"{}\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope",
                    caller.name
                ),
            ));
        }
        let mut groups: Vec<String> = headers
            .get_all("impersonate-group")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(String::from)
            .collect();
        if let Some(sa) = name.strip_prefix("system:serviceaccount:") {
            groups.push("system:serviceaccounts".into());
            if let Some((ns, _)) = sa.split_once(':') {
                groups.push(format!("system:serviceaccounts:{ns}"));
            }
        }
        Ok(User {
            name: name.to_string(),
            token: String::new(),
            groups,
        })
    }

    /// Allows the request or answers as the real server: 401 without a known token, 403
    /// when no binding grants the verb.
    pub fn check(
        &self,
        store: &Store,
        headers: &HeaderMap,
        path: &str,
        info: &RequestInfo,
    ) -> Result<(), ApiError> {
        let user = self.authenticate(headers)?;
        if user.groups.iter().any(|g| g == MASTERS) || info.resource.is_empty() {
            return Ok(());
        }
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let group = match segs.as_slice() {
            ["apis", group, ..] => *group,
            _ => "",
        };
        let attrs = Attributes {
            verb: &info.verb,
            group,
            resource: &info.resource,
            subresource: &info.subresource,
            namespace: &info.namespace,
            name: &info.name,
        };
        if allowed(store, &user, &attrs) {
            return Ok(());
        }
        let resource = if attrs.subresource.is_empty() {
            attrs.resource.to_string()
        } else {
            format!("{}/{}", attrs.resource, attrs.subresource)
        };
        let qualified = if group.is_empty() {
            attrs.resource.to_string()
        } else {
            format!("{}.{group}", attrs.resource)
        };
        let what = if attrs.name.is_empty() {
            qualified
        } else {
            format!("{qualified} \"{}\"", attrs.name)
        };
        let scope = if attrs.namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace \"{}\"", attrs.namespace)
        };
        Err(ApiError::forbidden(
            attrs.resource,
            group,
            attrs.name,
            format!(
                "{what} is forbidden: User \"{}\" cannot {} resource \"{resource}\" in API group \"{group}\" {scope}",
                user.name, attrs.verb
            ),
        ))
    }
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Whether `subject` (of a binding in `binding_ns`) names `user`.
fn names_user(subject: &Value, user: &User, binding_ns: &str) -> bool {
    let name = subject["name"].as_str().unwrap_or_default();
    match subject["kind"].as_str() {
        Some("User") => user.name == name,
        Some("Group") => name == "system:authenticated" || user.groups.iter().any(|g| g == name),
        Some("ServiceAccount") => {
            let ns = subject["namespace"].as_str().unwrap_or(binding_ns);
            user.name == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

/// Whether one PolicyRule grants the request.
fn rule_allows(rule: &Value, a: &Attributes) -> bool {
    let verbs = strings(&rule["verbs"]);
    let groups = strings(&rule["apiGroups"]);
    let resources = strings(&rule["resources"]);
    let names = strings(&rule["resourceNames"]);
    let full = if a.subresource.is_empty() {
        a.resource.to_string()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let resource_ok = resources.iter().any(|r| {
        *r == "*"
            || *r == full
            || (!a.subresource.is_empty()
                && (*r == format!("*/{}", a.subresource) || *r == format!("{}/*", a.resource)))
    });
    (verbs.contains(&"*") || verbs.contains(&a.verb))
        && (groups.contains(&"*") || groups.contains(&a.group))
        && resource_ok
        && (names.is_empty() || names.contains(&a.name))
}

fn list(store: &Store, plural: &str, ns: Option<&str>) -> Vec<Value> {
    let res = resources::find("rbac.authorization.k8s.io", "v1", plural).expect("RBAC kinds");
    store
        .list(
            res,
            ns,
            &LabelSelector::default(),
            &FieldSelector::default(),
        )
        .map(|(items, _)| items)
        .unwrap_or_default()
}

/// The rules of the role a binding in `binding_ns` refers to.
fn role_rules(store: &Store, binding: &Value, binding_ns: &str) -> Vec<Value> {
    let role_ref = &binding["roleRef"];
    let name = role_ref["name"].as_str().unwrap_or_default();
    let (plural, ns) = match role_ref["kind"].as_str() {
        Some("Role") => ("roles", binding_ns),
        Some("ClusterRole") => ("clusterroles", ""),
        _ => return Vec::new(),
    };
    let res = resources::find("rbac.authorization.k8s.io", "v1", plural).expect("RBAC kinds");
    store
        .get(res, ns, name)
        .ok()
        .and_then(|r| r["rules"].as_array().cloned())
        .unwrap_or_default()
}

fn allowed(store: &Store, user: &User, a: &Attributes) -> bool {
    let grants = |binding: &Value, binding_ns: &str| {
        binding["subjects"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| names_user(s, user, binding_ns)))
            && role_rules(store, binding, binding_ns)
                .iter()
                .any(|r| rule_allows(r, a))
    };
    list(store, "clusterrolebindings", None)
        .iter()
        .any(|b| grants(b, ""))
        || (!a.namespace.is_empty()
            && list(store, "rolebindings", Some(a.namespace))
                .iter()
                .any(|b| grants(b, a.namespace)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rules_match_verbs_groups_resources_subresources_and_names() {
        let a = Attributes {
            verb: "get",
            group: "apps",
            resource: "deployments",
            subresource: "scale",
            namespace: "demo",
            name: "web",
        };
        let rule = |r: Value| rule_allows(&r, &a);
        assert!(rule(
            json!({"verbs": ["get"], "apiGroups": ["apps"], "resources": ["deployments/scale"]})
        ));
        assert!(rule(
            json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]})
        ));
        assert!(rule(
            json!({"verbs": ["get"], "apiGroups": ["apps"], "resources": ["*/scale"]})
        ));
        assert!(!rule(
            json!({"verbs": ["get"], "apiGroups": ["apps"], "resources": ["deployments"]})
        ));
        assert!(!rule(
            json!({"verbs": ["list"], "apiGroups": ["apps"], "resources": ["deployments/scale"]})
        ));
        assert!(!rule(
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["deployments/scale"]})
        ));
        assert!(rule(
            json!({"verbs": ["get"], "apiGroups": ["apps"], "resources": ["deployments/scale"], "resourceNames": ["web"]})
        ));
        assert!(!rule(
            json!({"verbs": ["get"], "apiGroups": ["apps"], "resources": ["deployments/scale"], "resourceNames": ["api"]})
        ));
    }

    #[test]
    fn users_parse_from_the_flag() {
        let u = User::parse("s3cret,deployer,ops,dev").unwrap();
        assert_eq!(u.name, "deployer");
        assert_eq!(u.token, "s3cret");
        assert_eq!(u.groups, ["ops", "dev"]);
        assert!(User::parse("nobody").is_err());
        let sa = User::parse("tok,system:serviceaccount:keptn:helm-service").unwrap();
        assert_eq!(sa.name, "system:serviceaccount:keptn:helm-service");
    }
}
