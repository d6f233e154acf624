//! The authorization mode with the real kubectl and helm: bearer-token users, RBAC evaluated
//! from stored Roles, ClusterRoles and bindings, 401 and 403 answers worded as the real
//! server words them, and a least-privilege helm release.

mod common;

use common::*;
use kube_sim::authz::User;
use serde_json::json;

const DEPLOYER: &str = "system:serviceaccount:demo:deployer";

fn cluster() -> Cluster {
    let c = Cluster::start_with(kube_sim::Config {
        rbac: Some(vec![
            User::parse("alice-token,alice,team-a").unwrap(),
            User::parse(&format!("deployer-token,{DEPLOYER}")).unwrap(),
        ]),
        ..kube_sim::Config::default()
    });
    // The default context is the admin's.
    c.kubectl(&["create", "namespace", "demo"]).success();
    c.kubectl(&["create", "namespace", "other"]).success();
    for (i, obj) in [
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": "cm-editor", "namespace": "demo"},
               "rules": [{"apiGroups": [""], "resources": ["configmaps"],
                          "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "team-a-cm", "namespace": "demo"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-editor"},
               "subjects": [{"kind": "Group", "name": "team-a", "apiGroup": "rbac.authorization.k8s.io"}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": "release-manager"},
               "rules": [
                   {"apiGroups": [""], "resources": ["configmaps", "secrets", "services"], "verbs": ["*"]},
                   {"apiGroups": ["apps"], "resources": ["deployments", "deployments/scale"], "verbs": ["*"]},
               ]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "deployer", "namespace": "demo"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "release-manager"},
               "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": "demo"}]}),
    ]
    .iter()
    .enumerate()
    {
        let f = c.manifest(&format!("rbac-{i}.json"), obj);
        c.kubectl(&["apply", "-f", &f]).success();
    }
    c
}

/// `GET /api/v1/namespaces/demo/configmaps` with `headers`, on its own connection.
fn raw_get(c: &Cluster, headers: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(c.sim().addr()).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET /api/v1/namespaces/demo/configmaps HTTP/1.1\r\nHost: kube-sim\r\n{headers}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    let code = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, out)
}

#[test]
fn roles_and_bindings_decide_and_refusals_are_worded_as_the_real_server() {
    let c = cluster();
    let alice = |args: &[&str]| {
        let mut all = vec!["--context", "alice"];
        all.extend_from_slice(args);
        c.kubectl(&all)
    };
    alice(&["create", "configmap", "notes", "-n", "demo"]).success();
    assert_eq!(
        alice(&["get", "cm", "-n", "demo", "-o", "name"])
            .success()
            .trim(),
        "configmap/notes"
    );
    let err = alice(&["get", "secrets", "-n", "demo"]).failure();
    assert!(
        err.contains(r#"Error from server (Forbidden): secrets is forbidden: User "alice" cannot list resource "secrets" in API group "" in the namespace "demo""#),
        "{err}"
    );
    let err = alice(&["get", "cm", "notes", "-n", "other"]).failure();
    assert!(
        err.contains(r#"configmaps "notes" is forbidden: User "alice" cannot get resource "configmaps" in API group "" in the namespace "other""#),
        "{err}"
    );
    let err = alice(&["get", "nodes"]).failure();
    assert!(
        err.contains(r#"nodes is forbidden: User "alice" cannot list resource "nodes" in API group "" at the cluster scope"#),
        "{err}"
    );
    let err = alice(&[
        "create",
        "deployment",
        "web",
        "--image=registry.example/web:1",
        "-n",
        "demo",
    ])
    .failure();
    assert!(
        err.contains(r#"deployments.apps is forbidden: User "alice" cannot create resource "deployments" in API group "apps" in the namespace "demo""#),
        "{err}"
    );
    // An unknown token is not a user at all (client-go sends none over plain HTTP: a raw
    // request), and only system:masters may impersonate.
    let (code, body) = raw_get(&c, "Authorization: Bearer not-a-token");
    assert_eq!(code, 401, "{body}");
    assert!(body.contains(r#""reason":"Unauthorized""#), "{body}");
    let (code, body) = raw_get(
        &c,
        "Authorization: Bearer alice-token\r\nImpersonate-User: bob",
    );
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains(r#"users \"bob\" is forbidden: User \"alice\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"#),
        "{body}"
    );
    let (code, _) = raw_get(&c, "Authorization: Bearer alice-token");
    assert_eq!(code, 200, "alice's own token lists configmaps in demo");
    // A ServiceAccount subject binds the user of that name; subresources are named.
    let sa = |args: &[&str]| {
        let mut all = vec!["--context", DEPLOYER];
        all.extend_from_slice(args);
        c.kubectl(&all)
    };
    let web = c.manifest("web.json", &deployment("registry.example/web:1"));
    sa(&["apply", "-f", &web]).success();
    sa(&["scale", "deploy/web", "-n", "demo", "--replicas=2"]).success();
    let err = sa(&["delete", "namespace", "demo"]).failure();
    assert!(
        err.contains(&format!(r#"namespaces "demo" is forbidden: User "{DEPLOYER}" cannot delete resource "namespaces" in API group "" in the namespace "demo""#)),
        "{err}"
    );
}

#[test]
fn a_least_privilege_helm_release() {
    let c = cluster();
    let dir = c.home.path().join("app");
    write_chart(
        &dir,
        "app",
        &[(
            "templates/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-settings\ndata:\n  level: {{ .Values.level | default \"info\" | quote }}\n",
        )],
    );
    let dir = dir.to_string_lossy().into_owned();
    let helm = |args: &[&str]| {
        let mut all = vec!["--kube-context", DEPLOYER];
        all.extend_from_slice(args);
        c.helm(&all)
    };
    helm(&[
        "install",
        "rel",
        &dir,
        "-n",
        "demo",
        "--wait",
        "--timeout",
        "60s",
    ])
    .success();
    helm(&[
        "upgrade",
        "rel",
        &dir,
        "-n",
        "demo",
        "--set",
        "level=debug",
        "--wait",
        "--timeout",
        "60s",
    ])
    .success();
    // The same chart in a namespace the deployer has no binding in is refused.
    let err = helm(&["install", "rel", &dir, "-n", "other", "--timeout", "60s"]).failure();
    assert!(
        err.contains(&format!(r#"User "{DEPLOYER}" cannot"#))
            && err.contains(r#"in the namespace "other""#),
        "{err}"
    );
    helm(&["uninstall", "rel", "-n", "demo", "--wait"]).success();
}
