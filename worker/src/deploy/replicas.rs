//! Changing a release's replica counts through Helm without its chart.
//!
//! Scaling the canary to zero after a release (and scaling a `direct` service) must go
//! through Helm: a Deployment scaled behind Helm's back conflicts with Helm 4's server-side
//! apply on the next upgrade, and `helm history` would not show it. A user chart has no
//! standard replicas value, so instead the release is upgraded with a one-template chart
//! that prints the manifest of an earlier revision the user's chart rendered (the
//! *source revision*) with the Deployments' `spec.replicas` changed. The manifest travels
//! as a string value, so nothing in it is ever read as a template.
//!
//! The values of such a revision carry a [`ReplicaOverride`] marker: a later task finds the
//! source revision (what the user's chart really rendered) through it, and the next
//! deployment simply upgrades with the real chart again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use super::autoscaling;
use super::manifest::{name_of, Manifest, ManifestError};
use super::manifest_chart::{self, MANIFEST_KEY};
use super::traffic;

/// Values key of the marker.
pub const MARKER_KEY: &str = "helmService";

#[derive(Debug, Error)]
pub enum ReplicasError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("release {release} has no Deployment {name} in revision {revision} to scale")]
    NoSuchDeployment {
        release: String,
        name: String,
        revision: u32,
    },
    #[error("writing the manifest of release {release}: {detail}")]
    Render { release: String, detail: String },
}

/// The marker in the values of a revision made by [`override_values`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaOverride {
    /// The revision whose manifest was re-deployed: one the user's chart rendered.
    pub source_revision: u32,
    /// Deployment name → replicas, for the Deployments whose count was changed.
    pub replicas: BTreeMap<String, u32>,
    /// The `service` traffic layer's switch (`traffic::select_primary`): the manifest's
    /// Services select the blue/green primary's pods. Absent in markers of earlier versions.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub selects_primary: bool,
}

impl ReplicaOverride {
    /// The marker in a revision's values, when helm-service made that revision.
    pub fn of(config: &Value) -> Option<ReplicaOverride> {
        serde_json::from_value(config.get(MARKER_KEY)?.clone()).ok()
    }

    /// Every overridden Deployment runs no pods (the canary after a release).
    pub fn is_scaled_to_zero(&self) -> bool {
        !self.replicas.is_empty() && self.replicas.values().all(|&count| count == 0)
    }
}

/// What the user's chart rendered for revision `source` (see [`chart_rendering`]) changed as
/// `marker` says: replicas (see [`with_replicas`]) and, when it selects the primary, the
/// Services' selectors; then the source's `hooks` (`(events, manifest)`) that last (see
/// [`LASTING_HOOK_EVENTS`]).
pub fn with_override<'a>(
    release: &str,
    mut source: Manifest,
    marker: &ReplicaOverride,
    hooks: impl IntoIterator<Item = (&'a [String], &'a str)>,
) -> Result<String, ReplicasError> {
    set_replicas(
        release,
        marker.source_revision,
        &mut source,
        &marker.replicas,
    )?;
    if marker.selects_primary {
        traffic::select_primary(&mut source.objects);
    }
    let lasting = lasting_hooks(release, hooks)?;
    let mut text = render(release, &source)?;
    text.push_str(&render(release, &Manifest { objects: lasting })?);
    Ok(text)
}

/// The hook events an override revision keeps from its source. Helm never runs them on the
/// override's own upgrade (they run at `helm test` and `helm uninstall`, from the latest
/// revision's hooks), and without them a release whose latest revision helm-service wrote
/// (a canary scaled to zero, a switched selector) would have lost its tests and the hooks
/// its chart runs at deletion. Install, upgrade and rollback hooks are not kept: they would
/// run again at the override's upgrade.
pub const LASTING_HOOK_EVENTS: [&str; 4] = ["test", "test-success", "pre-delete", "post-delete"];

/// Helm's annotation naming a hook's events.
const HOOK_ANNOTATION: &str = "helm.sh/hook";

/// The `hooks` (`(events, manifest)`) with a lasting event, each annotated with its lasting
/// events only.
fn lasting_hooks<'a>(
    release: &str,
    hooks: impl IntoIterator<Item = (&'a [String], &'a str)>,
) -> Result<Vec<Value>, ReplicasError> {
    let mut kept = Vec::new();
    for (events, manifest) in hooks {
        let lasting: Vec<&str> = events
            .iter()
            .map(String::as_str)
            .filter(|event| LASTING_HOOK_EVENTS.contains(event))
            .collect();
        if lasting.is_empty() {
            continue;
        }
        for mut object in Manifest::parse(release, manifest)?.objects {
            if !object["metadata"]["annotations"].is_object() {
                object["metadata"]["annotations"] = Value::Object(Default::default());
            }
            object["metadata"]["annotations"][HOOK_ANNOTATION] = Value::from(lasting.join(","));
            kept.push(object);
        }
    }
    Ok(kept)
}

/// What the user's chart rendered for `revision`, from the revision's stored manifest and
/// values: the manifest as it is, unless the revision is a deployment [`held_on_primary`]
/// (its marker names itself as the source and selects the primary), whose Services'
/// selectors are switched back.
pub fn chart_rendering(
    release: &str,
    revision: u32,
    manifest: &str,
    config: &Value,
) -> Result<Manifest, ReplicasError> {
    let mut parsed = Manifest::parse(release, manifest)?;
    let held = ReplicaOverride::of(config)
        .is_some_and(|marker| marker.source_revision == revision && marker.selects_primary);
    if held {
        traffic::select_canary(&mut parsed.objects);
    }
    Ok(parsed)
}

/// A deployment of the user's chart that keeps the `service` layer's Services on the
/// primary: after a promotion or a rollback the canary runs no pods, and the chart's own
/// selector (the canary's pods) would leave the Service without endpoints until the new
/// canary is ready. The deployment switches the selector once the canary is ready and tested.
pub struct HeldOnPrimary {
    /// Names the deployed revision as its own source, selecting the primary.
    pub marker: ReplicaOverride,
    /// What the chart rendered: what the deployment waits for and the blue/green model reads.
    pub rendering: Manifest,
    /// What is deployed (through [`write_chart`]): the rendering with the Services selecting
    /// the primary, then the hooks as Helm rendered them, so Helm runs them as hooks of this
    /// revision and `helm test` finds its tests.
    pub manifest: String,
}

/// Sizes only: the manifests may hold rendered Secrets.
impl std::fmt::Debug for HeldOnPrimary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldOnPrimary")
            .field("marker", &self.marker)
            .field("rendering_objects", &self.rendering.objects.len())
            .field("manifest_bytes", &self.manifest.len())
            .finish()
    }
}

/// The [`HeldOnPrimary`] deployment of what the chart renders for `revision` (a dry run of
/// its upgrade): `manifest`, and `hooks`, one manifest per hook.
pub fn held_on_primary(
    release: &str,
    revision: u32,
    manifest: &str,
    hooks: &[String],
) -> Result<HeldOnPrimary, ReplicasError> {
    let rendering = Manifest::parse(release, manifest)?;
    let mut held = rendering.clone();
    traffic::select_primary(&mut held.objects);
    let mut text = render(release, &held)?;
    for hook in hooks {
        text.push_str("---\n");
        text.push_str(hook.trim_start_matches("---\n"));
        if !hook.ends_with('\n') {
            text.push('\n');
        }
    }
    Ok(HeldOnPrimary {
        marker: ReplicaOverride {
            source_revision: revision,
            replicas: BTreeMap::new(),
            selects_primary: true,
        },
        rendering,
        manifest: text,
    })
}

/// `manifest` with `spec.replicas` of the named Deployments changed; every name must be a
/// Deployment of the manifest.
pub fn with_replicas(
    release: &str,
    revision: u32,
    manifest: &str,
    replicas: &BTreeMap<String, u32>,
) -> Result<String, ReplicasError> {
    let mut parsed = Manifest::parse(release, manifest)?;
    set_replicas(release, revision, &mut parsed, replicas)?;
    render(release, &parsed)
}

fn render(release: &str, parsed: &Manifest) -> Result<String, ReplicasError> {
    manifest_chart::to_manifest(&parsed.objects).map_err(|err| ReplicasError::Render {
        release: release.to_owned(),
        detail: err.to_string(),
    })
}

fn set_replicas(
    release: &str,
    revision: u32,
    parsed: &mut Manifest,
    replicas: &BTreeMap<String, u32>,
) -> Result<(), ReplicasError> {
    for (name, count) in replicas {
        let deployment = parsed
            .objects
            .iter_mut()
            .find(|object| {
                object["kind"] == "Deployment"
                    && object["apiVersion"] == "apps/v1"
                    && name_of(object) == Some(name.as_str())
            })
            .ok_or_else(|| ReplicasError::NoSuchDeployment {
                release: release.to_owned(),
                name: name.clone(),
                revision,
            })?;
        deployment["spec"]["replicas"] = Value::from(*count);
        // Its HPA may not undo the count: removed at 0, bounds fitted otherwise.
        autoscaling::settle(&mut parsed.objects, name, *count);
    }
    Ok(())
}

/// The values of an override revision: the marker, the manifest to print and, for operators
/// reading `helm get values`, the Keptn values of the source revision.
pub fn override_values(marker: &ReplicaOverride, manifest: String, source_config: &Value) -> Value {
    let mut values = serde_json::Map::new();
    if let Some(keptn) = source_config.get("keptn") {
        values.insert("keptn".into(), keptn.clone());
    }
    values.insert(
        MARKER_KEY.into(),
        serde_json::to_value(marker).unwrap_or(Value::Null),
    );
    values.insert(MANIFEST_KEY.into(), Value::String(manifest));
    Value::Object(values)
}

/// Writes the one-template chart of an override revision under `dir`, named, versioned and
/// app-versioned like the user's chart (`(name, version, app version)`) so `helm list` keeps
/// showing it; returns the chart directory.
pub fn write_chart(
    dir: &Path,
    (chart_name, chart_version, app_version): (&str, &str, &str),
) -> std::io::Result<PathBuf> {
    manifest_chart::write(
        dir,
        "chart",
        (
            // Helm refuses charts without a name or version; the stored ones always have both.
            if chart_name.is_empty() {
                "chart"
            } else {
                chart_name
            },
            if chart_version.is_empty() {
                "0.0.0"
            } else {
                chart_version
            },
            app_version,
        ),
        "a manifest the user's chart rendered, changed by helm-service (replica counts, \
         the service traffic layer's selector); the next deployment of the chart replaces it",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MANIFEST: &str = "---
# Source: carts/templates/deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: carts
  annotations: {note: '{{ not a template }}'}
spec:
  replicas: 3
  template:
    spec:
      containers: [{name: c, image: 'carts:2', resources: {limits: {memory: 1000000}}}]
---
apiVersion: v1
kind: Service
metadata: {name: carts}
spec: {ports: [{port: 80}]}
";

    #[test]
    fn replicas_change_and_everything_else_stays() {
        let replicas = BTreeMap::from([("carts".to_owned(), 0)]);
        let out = with_replicas("r", 4, MANIFEST, &replicas).unwrap();
        let parsed = Manifest::parse("r", &out).unwrap();
        assert_eq!(parsed.objects.len(), 2);
        let deployment = parsed.deployments()[0];
        assert_eq!(deployment["spec"]["replicas"], 0);
        assert_eq!(
            deployment["metadata"]["annotations"]["note"],
            "{{ not a template }}"
        );
        // Integers stay integers (Helm's values would turn them into floats).
        assert_eq!(
            deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
                ["memory"],
            1000000
        );
        assert_eq!(parsed.services().len(), 1);
    }

    #[test]
    fn unknown_deployment_is_named() {
        let replicas = BTreeMap::from([("orders".to_owned(), 1)]);
        let err = with_replicas("shop-dev-carts", 4, MANIFEST, &replicas).unwrap_err();
        assert_eq!(
            err.to_string(),
            "release shop-dev-carts has no Deployment orders in revision 4 to scale"
        );
    }

    #[test]
    fn marker_round_trips_through_values() {
        let marker = ReplicaOverride {
            source_revision: 2,
            replicas: BTreeMap::from([("carts".to_owned(), 0)]),
            selects_primary: false,
        };
        let source = json!({"keptn": {"deployment": "canary"}});
        let values = override_values(&marker, "---\n".into(), &source);
        assert_eq!(values["keptn"]["deployment"], "canary");
        assert_eq!(ReplicaOverride::of(&values), Some(marker.clone()));
        assert!(marker.is_scaled_to_zero());
        assert_eq!(ReplicaOverride::of(&source), None);
        // Markers of earlier versions (no selector switch) still read.
        let old = json!({MARKER_KEY: {"source_revision": 2, "replicas": {"carts": 0}}});
        assert_eq!(ReplicaOverride::of(&old), Some(marker));
    }

    #[test]
    fn an_override_can_switch_the_service_to_the_primary() {
        let manifest = MANIFEST.replace(
            "spec: {ports: [{port: 80}]}",
            "spec: {selector: {app: carts}, ports: [{port: 80}]}",
        );
        let mut marker = ReplicaOverride {
            source_revision: 4,
            replicas: BTreeMap::new(),
            selects_primary: true,
        };
        let source = || Manifest::parse("r", &manifest).unwrap();
        let out = with_override("r", source(), &marker, []).unwrap();
        let parsed = Manifest::parse("r", &out).unwrap();
        assert_eq!(
            parsed.services()[0]["spec"]["selector"]["app"],
            "carts-primary"
        );
        assert_eq!(parsed.deployments()[0]["spec"]["replicas"], 3);
        assert!(!marker.is_scaled_to_zero());
        marker.selects_primary = false;
        marker.replicas.insert("carts".into(), 0);
        let out = with_override("r", source(), &marker, []).unwrap();
        let parsed = Manifest::parse("r", &out).unwrap();
        assert_eq!(parsed.services()[0]["spec"]["selector"]["app"], "carts");
        assert_eq!(parsed.deployments()[0]["spec"]["replicas"], 0);
    }

    #[test]
    fn a_held_deployment_selects_the_primary_and_keeps_its_hooks() {
        let manifest = MANIFEST.replace(
            "spec: {ports: [{port: 80}]}",
            "spec: {selector: {app: carts}, ports: [{port: 80}]}",
        );
        let hook = "# Source: carts/templates/test.yaml\napiVersion: v1\nkind: Pod\n\
                    metadata:\n  name: carts-test\n  annotations: {helm.sh/hook: test}\n";
        let held = held_on_primary("r", 7, &manifest, &[hook.to_owned()]).unwrap();
        assert_eq!(
            held.marker,
            ReplicaOverride {
                source_revision: 7,
                replicas: BTreeMap::new(),
                selects_primary: true
            }
        );
        let deployed = Manifest::parse("r", &held.manifest).unwrap();
        assert_eq!(deployed.objects.len(), 3, "{}", held.manifest);
        assert_eq!(
            deployed.services()[0]["spec"]["selector"]["app"],
            "carts-primary"
        );
        assert_eq!(
            deployed.objects[2]["metadata"]["annotations"]["helm.sh/hook"],
            "test"
        );
        assert!(held.manifest.ends_with(hook), "{}", held.manifest);
        // The rendering is the chart's.
        assert_eq!(
            held.rendering.services()[0]["spec"]["selector"]["app"],
            "carts"
        );

        // Stored as revision 7 with its marker, the chart's rendering is read back from it;
        // a revision whose marker names another source (a later override) is read as it is.
        // Helm stores the manifest without the hooks.
        let stored = held
            .manifest
            .strip_suffix(hook)
            .unwrap()
            .trim_end_matches("---\n");
        let values = override_values(&held.marker, held.manifest.clone(), &json!({}));
        let back = chart_rendering("r", 7, stored, &values).unwrap();
        assert_eq!(back, held.rendering);
        let later = chart_rendering("r", 8, stored, &values).unwrap();
        assert_eq!(
            later.services()[0]["spec"]["selector"]["app"],
            "carts-primary"
        );
    }

    #[test]
    fn an_override_keeps_the_tests_and_deletion_hooks_only() {
        let hook = |name: &str, events: &str| {
            let manifest = format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  annotations:\n    \
                 helm.sh/hook: {events}\n    helm.sh/hook-weight: \"2\"\n"
            );
            let events: Vec<String> = events.split(',').map(str::to_owned).collect();
            (events, manifest)
        };
        let hooks = [
            hook("migrate", "pre-install,pre-upgrade"),
            hook("check", "test"),
            hook("drain", "pre-upgrade,pre-delete"),
            hook("notify", "post-upgrade"),
            hook("cleanup", "post-delete"),
        ];
        let marker = ReplicaOverride {
            source_revision: 3,
            replicas: BTreeMap::from([("carts".to_owned(), 0)]),
            selects_primary: false,
        };
        let source = Manifest::parse("r", MANIFEST).unwrap();
        let out = with_override(
            "r",
            source,
            &marker,
            hooks.iter().map(|(e, m)| (e.as_slice(), m.as_str())),
        )
        .unwrap();
        let objects = Manifest::parse("r", &out).unwrap().objects;
        let kept: Vec<(&str, &str)> = objects
            .iter()
            .filter(|o| o["kind"] == "Pod")
            .map(|o| {
                (
                    name_of(o).unwrap(),
                    o["metadata"]["annotations"]["helm.sh/hook"]
                        .as_str()
                        .unwrap(),
                )
            })
            .collect();
        assert_eq!(
            kept,
            [
                ("check", "test"),
                ("drain", "pre-delete"),
                ("cleanup", "post-delete")
            ]
        );
        assert_eq!(
            objects[3]["metadata"]["annotations"]["helm.sh/hook-weight"],
            "2"
        );
        assert_eq!(objects[0]["spec"]["replicas"], 0);
    }

    #[test]
    fn chart_keeps_the_user_chart_name() {
        let dir = tempfile::tempdir().unwrap();
        let chart = write_chart(dir.path(), ("carts", "1.2.3", "")).unwrap();
        let meta = std::fs::read_to_string(chart.join("Chart.yaml")).unwrap();
        assert!(meta.contains("name: carts") && meta.contains("version: 1.2.3"));
        let template = std::fs::read_to_string(chart.join("templates/manifest.yaml")).unwrap();
        assert_eq!(template, "{{ .Values.manifest }}\n");
    }

    #[test]
    fn the_hpa_of_a_scaled_deployment_is_settled_in_the_same_manifest() {
        let with_hpa = format!(
            "{MANIFEST}---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {{name: carts}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: carts}}
  minReplicas: 2
  maxReplicas: 5
"
        );
        let hpas = |text: &str| -> Vec<Value> {
            Manifest::parse("r", text)
                .unwrap()
                .objects
                .into_iter()
                .filter(|o| o["kind"] == "HorizontalPodAutoscaler")
                .collect()
        };
        // At zero (the canary after a release) nothing may scale it back: no HPA.
        let zero =
            with_replicas("r", 1, &with_hpa, &BTreeMap::from([("carts".into(), 0)])).unwrap();
        assert!(hpas(&zero).is_empty(), "{zero}");
        // Scaled up past its maximum: the bounds admit the count.
        let eight =
            with_replicas("r", 1, &with_hpa, &BTreeMap::from([("carts".into(), 8)])).unwrap();
        let hpa = &hpas(&eight)[0];
        assert_eq!(
            (
                hpa["spec"]["minReplicas"].clone(),
                hpa["spec"]["maxReplicas"].clone()
            ),
            (json!(8), json!(8))
        );
    }
}
