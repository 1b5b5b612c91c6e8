//! Helpers for the tests against a real kube-apiserver (`conformance/kube/controlplane.sh`):
//! where its state is, its control, and the objects every such test applies.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::Client;
use serde_json::{json, Value};

/// The control plane's state directory, or a failed test.
pub fn statedir() -> PathBuf {
    let dir = std::env::var_os("SIGIL_KUBE_STATEDIR").expect(
        "SIGIL_KUBE_STATEDIR is not set: start the control plane with \
         `conformance/kube/controlplane.sh start DIR` and set SIGIL_KUBE_STATEDIR=DIR",
    );
    let dir = PathBuf::from(dir);
    assert!(
        dir.join("admin.kubeconfig").is_file(),
        "no admin.kubeconfig in {}: is the control plane started?",
        dir.display()
    );
    dir
}

/// `controlplane.sh SUBCOMMAND STATEDIR`.
pub fn controlplane(subcommand: &str, statedir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/kube/controlplane.sh");
    let status = std::process::Command::new(script)
        .arg(subcommand)
        .arg(statedir)
        .status()
        .expect("controlplane.sh runs");
    assert!(status.success(), "controlplane.sh {subcommand}: {status}");
}

/// The `configurations.dapr.io/v1alpha1` resource (a CRD the tests install).
pub fn configuration_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("dapr.io", "v1alpha1", "Configuration"),
        "configurations",
    )
}

/// A namespace (idempotent; server-side apply with `ssa`).
pub async fn namespace(client: &Client, ssa: &PatchParams, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    api.patch(
        name,
        ssa,
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})),
    )
    .await
    .unwrap_or_else(|e| panic!("namespace {name}: {e}"));
}

/// A Dapr `Configuration` (idempotent). Right after the CRD is established the API server
/// may still answer 404 for its resource for a moment: retried.
pub async fn configuration(client: &Client, ssa: &PatchParams, ns: &str, name: &str, spec: Value) {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &configuration_resource());
    let obj = json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Configuration",
                     "metadata": {"name": name, "namespace": ns}, "spec": spec});
    let mut last = None;
    for _ in 0..50 {
        match api.patch(name, ssa, &Patch::Apply(&obj)).await {
            Ok(_) => return,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("Configuration {ns}/{name}: {last:?}");
}
