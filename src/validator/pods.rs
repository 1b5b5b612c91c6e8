//! Where the Kubernetes validator reads pods from.
//!
//! Two ways, chosen by `--pod-lookup`:
//! - `watch` (the default, as Dapr's informer): one cluster-wide list, then a watch that
//!   keeps a local copy current. A request then costs no API call for its pod. The copy holds
//!   only what validation reads (name, UID, service account, `dapr.io/*` annotations,
//!   container names, images and digests), a few hundred bytes a pod, so its memory does not
//!   carry every pod's full spec and status (Dapr #5693). Needs `list` and `watch` on pods.
//! - `get`: one GET of the pod per validation (which the token cache makes once per token).
//!   Needs only `get` on pods: least privilege, and no memory that grows with the cluster.
//!
//! A pod the copy does not hold (yet) is read with a GET before it is refused: a pod created
//! a moment ago may not have reached the watch. So is every pod while the first list has not
//! arrived within the API deadline. The GET answers "not found" with a refusal and an API
//! failure with UNAVAILABLE, as in `get` mode.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio_stream::StreamExt as _;

use super::pod_lookup::PodLookup;
use crate::cluster::{self, ApiFailure};
use crate::Error;

/// Annotations kept in the local copy: Dapr's own.
const KEPT_ANNOTATION_PREFIX: &str = "dapr.io/";
/// Server-side timeout of one watch request; the watch is renewed after it.
const WATCH_TIMEOUT_SECS: u32 = 290;
/// Wait between failed lists, doubling up to the cap.
const RELIST_BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));

/// Pods, read as `--pod-lookup` says.
pub struct Pods {
    client: Client,
    api_timeout: Duration,
    copy: Option<Arc<PodCopy>>,
}

impl std::fmt::Debug for Pods {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pods")
            .field("watch", &self.copy.is_some())
            .finish()
    }
}

/// The local copy and whether the first list has arrived.
struct PodCopy {
    pods: RwLock<HashMap<(String, String), Arc<Pod>>>,
    synced: watch::Sender<bool>,
}

impl Pods {
    /// Starts the list and watch (in `watch` mode) on the current runtime.
    pub fn new(client: Client, lookup: PodLookup, api_timeout: Duration) -> Self {
        let copy = (lookup == PodLookup::Watch).then(|| {
            let copy = Arc::new(PodCopy {
                pods: RwLock::new(HashMap::new()),
                synced: watch::channel(false).0,
            });
            // The task holds only a weak reference: it ends with the validator.
            tokio::spawn(keep_current(
                Api::all(client.clone()),
                Arc::downgrade(&copy),
            ));
            copy
        });
        Self {
            client,
            api_timeout,
            copy,
        }
    }

    /// The pod `namespace/name`; a refusal when it does not exist.
    pub async fn get(&self, namespace: &str, name: &str) -> Result<Arc<Pod>, Error> {
        if let Some(copy) = &self.copy {
            let mut synced = copy.synced.subscribe();
            let ready = tokio::time::timeout(self.api_timeout, synced.wait_for(|s| *s)).await;
            if matches!(ready, Ok(Ok(_))) {
                let key = (namespace.to_owned(), name.to_owned());
                if let Some(pod) = copy.read().get(&key) {
                    return Ok(pod.clone());
                }
            }
        }
        self.get_from_api(namespace, name).await
    }

    async fn get_from_api(&self, namespace: &str, name: &str) -> Result<Arc<Pod>, Error> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        match cluster::call(self.api_timeout, api.get(name)).await {
            Ok(pod) => Ok(Arc::new(pod)),
            Err(ApiFailure::NotFound) => Err(Error::Denied(format!(
                "the token's pod {namespace}/{name} does not exist"
            ))),
            Err(e) => Err(e.unavailable("reading the pod")),
        }
    }

    /// Pods in the local copy (`None` in `get` mode).
    pub fn cached(&self) -> Option<usize> {
        self.copy.as_ref().map(|c| c.read().len())
    }
}

impl PodCopy {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<(String, String), Arc<Pod>>> {
        // A poisoned lock only means a writer panicked mid-update of a plain map.
        self.pods.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<(String, String), Arc<Pod>>> {
        self.pods.write().unwrap_or_else(|e| e.into_inner())
    }

    fn apply(&self, event: WatchEvent<Pod>) -> WatchStep {
        match event {
            WatchEvent::Added(pod) | WatchEvent::Modified(pod) => {
                let version = pod.metadata.resource_version.clone();
                if let Some(key) = key_of(&pod) {
                    self.write().insert(key, Arc::new(trimmed(pod)));
                }
                WatchStep::Continue(version)
            }
            WatchEvent::Deleted(pod) => {
                let version = pod.metadata.resource_version.clone();
                if let Some(key) = key_of(&pod) {
                    self.write().remove(&key);
                }
                WatchStep::Continue(version)
            }
            WatchEvent::Bookmark(b) => WatchStep::Continue(Some(b.metadata.resource_version)),
            // 410 Gone (the version is too old) and every other error: list again.
            WatchEvent::Error(status) => WatchStep::Relist(format!(
                "{} {}: {}",
                status.code, status.reason, status.message
            )),
        }
    }
}

enum WatchStep {
    Continue(Option<String>),
    Relist(String),
}

fn key_of(pod: &Pod) -> Option<(String, String)> {
    Some((pod.metadata.namespace.clone()?, pod.metadata.name.clone()?))
}

/// Lists, then watches from the list's version, until the copy is dropped. A watch that
/// ends is renewed from the last version seen; one that fails, or any error event, leads to
/// a new list after a backoff.
async fn keep_current(api: Api<Pod>, copy: std::sync::Weak<PodCopy>) {
    let mut backoff = RELIST_BACKOFF.0;
    loop {
        if copy.strong_count() == 0 {
            return;
        }
        let list = match api.list(&ListParams::default()).await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %ApiFailure::from_kube(e).message(), retry_in = ?backoff, "listing pods failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RELIST_BACKOFF.1);
                continue;
            }
        };
        let Some(current) = copy.upgrade() else {
            return;
        };
        let mut version = list.metadata.resource_version.clone().unwrap_or_default();
        {
            let fresh: HashMap<_, _> = list
                .items
                .into_iter()
                .filter_map(|p| Some((key_of(&p)?, Arc::new(trimmed(p)))))
                .collect();
            tracing::debug!(pods = fresh.len(), "pod list loaded");
            *current.write() = fresh;
        }
        current.synced.send_replace(true);
        drop(current);
        let reason = loop {
            let params = WatchParams::default().timeout(WATCH_TIMEOUT_SECS);
            let stream = match api.watch(&params, &version).await {
                Ok(s) => s,
                Err(e) => break ApiFailure::from_kube(e).message(),
            };
            tokio::pin!(stream);
            let mut failed = None;
            while let Some(item) = stream.next().await {
                let Some(current) = copy.upgrade() else {
                    return;
                };
                match item.map(|event| current.apply(event)) {
                    Ok(WatchStep::Continue(v)) => {
                        if let Some(v) = v.filter(|v| !v.is_empty()) {
                            version = v;
                        }
                        backoff = RELIST_BACKOFF.0;
                    }
                    Ok(WatchStep::Relist(why)) => {
                        failed = Some(why);
                        break;
                    }
                    Err(e) => {
                        failed = Some(ApiFailure::from_kube(e).message());
                        break;
                    }
                }
            }
            if let Some(why) = failed {
                break why;
            }
        };
        tracing::debug!(reason = %reason, retry_in = ?backoff, "pod watch ended; listing again");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RELIST_BACKOFF.1);
    }
}

/// The parts of a pod that validation reads; everything else is dropped before it is kept.
fn trimmed(pod: Pod) -> Pod {
    let meta = pod.metadata;
    let annotations: BTreeMap<String, String> = meta
        .annotations
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k.starts_with(KEPT_ANNOTATION_PREFIX))
        .collect();
    let container = |c: Container| Container {
        name: c.name,
        image: c.image,
        restart_policy: c.restart_policy,
        ..Default::default()
    };
    let status = |s: ContainerStatus| ContainerStatus {
        name: s.name,
        image_id: s.image_id,
        ..Default::default()
    };
    let spec = pod.spec.map(|s| PodSpec {
        service_account_name: s.service_account_name,
        containers: s.containers.into_iter().map(container).collect(),
        init_containers: s
            .init_containers
            .map(|cs| cs.into_iter().map(container).collect()),
        ..Default::default()
    });
    let status = pod.status.map(|s| PodStatus {
        container_statuses: s
            .container_statuses
            .map(|cs| cs.into_iter().map(status).collect()),
        init_container_statuses: s
            .init_container_statuses
            .map(|cs| cs.into_iter().map(status).collect()),
        ..Default::default()
    });
    Pod {
        metadata: ObjectMeta {
            name: meta.name,
            namespace: meta.namespace,
            uid: meta.uid,
            resource_version: meta.resource_version,
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..Default::default()
        },
        spec,
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name, "namespace": "ns", "uid": "u-1", "resourceVersion": "7",
                "labels": {"app": "x"},
                "annotations": {"dapr.io/app-id": "a", "dapr.io/config": "c", "kubectl.kubernetes.io/last-applied-configuration": "{...}"},
                "managedFields": [{"manager": "kubectl"}]
            },
            "spec": {
                "serviceAccountName": "sa",
                "containers": [{"name": "app", "image": "app:1", "env": [{"name": "SECRET", "value": "x"}]}],
                "initContainers": [{"name": "daprd", "image": "daprd:1", "restartPolicy": "Always", "args": ["--x"]}]
            },
            "status": {
                "podIP": "10.0.0.1",
                "containerStatuses": [{"name": "app", "image": "app:1", "imageID": "app@sha256:ab", "ready": true, "restartCount": 0}]
            }
        }))
        .unwrap()
    }

    #[test]
    fn the_copy_keeps_what_validation_reads_and_nothing_else() {
        let original = pod("p");
        let images_before = super::super::kubernetes::container_images_json(&original);
        let t = trimmed(original);
        assert_eq!(t.metadata.uid.as_deref(), Some("u-1"));
        let ann = t.metadata.annotations.as_ref().unwrap();
        assert_eq!(ann.len(), 2, "{ann:?}");
        assert!(t.metadata.labels.is_none() && t.metadata.managed_fields.is_none());
        let spec = t.spec.as_ref().unwrap();
        assert_eq!(spec.service_account_name.as_deref(), Some("sa"));
        assert!(spec.containers[0].env.is_none());
        assert!(t.status.as_ref().unwrap().pod_ip.is_none());
        // The certificate's image extension reads the same from the copy.
        assert_eq!(
            super::super::kubernetes::container_images_json(&t),
            images_before
        );
        assert!(images_before.is_some());
    }

    #[test]
    fn events_add_update_and_remove() {
        let copy = PodCopy {
            pods: RwLock::new(HashMap::new()),
            synced: watch::channel(true).0,
        };
        assert!(matches!(
            copy.apply(WatchEvent::Added(pod("p"))),
            WatchStep::Continue(Some(v)) if v == "7"
        ));
        assert_eq!(copy.read().len(), 1);
        copy.apply(WatchEvent::Deleted(pod("p")));
        assert!(copy.read().is_empty());
        let status = kube::core::Status::failure("too old", "Expired").with_code(410);
        assert!(matches!(
            copy.apply(WatchEvent::Error(Box::new(status))),
            WatchStep::Relist(_)
        ));
    }
}
