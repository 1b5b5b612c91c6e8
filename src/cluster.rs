//! The connection to the Kubernetes API server (kubernetes mode): building the client from
//! the in-cluster service account or a kubeconfig file, reading the Dapr `Configuration`,
//! and telling "the object is not there" apart from "the API server could not be asked".

use std::path::Path;
use std::time::Duration;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, Client};

use crate::config::{Config, DaprConfiguration, Mode, ServeArgs};
use crate::Error;

/// Longest wait for one API call; a request makes up to three in a row and has to answer
/// (with UNAVAILABLE) before the gRPC deadline.
pub fn api_timeout(request_timeout: Duration) -> Duration {
    (request_timeout / 4).max(Duration::from_millis(200))
}

/// A client for the API server: the kubeconfig file when one is given, otherwise the pod's
/// in-cluster service account.
pub async fn connect(kubeconfig: Option<&Path>, timeout: Duration) -> Result<Client, Error> {
    let mut config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| Error::Config(format!("--kubeconfig {}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Config(format!("--kubeconfig {}: {e}", path.display())))?
        }
        None => kube::Config::incluster().map_err(|e| {
            Error::Config(format!(
                "kubernetes mode without --kubeconfig needs the in-cluster service account: {e}"
            ))
        })?,
    };
    config.connect_timeout = Some(timeout);
    // [`call`] puts the deadline on every request and says so in its error; the client's
    // own read timeout is only a backstop (its error reads "client error (SendRequest)").
    config.read_timeout = Some(timeout * 2);
    // Count the read timeout from each request, not from when a pooled connection idled.
    config.reset_reader_on_write = true;
    Client::try_from(config).map_err(|e| Error::Config(format!("Kubernetes client: {e}")))
}

/// What went wrong talking to the API server, in the validator's and store's terms.
#[derive(Debug)]
pub enum ApiFailure {
    /// 404.
    NotFound,
    /// 409 (create of an existing object, or a stale `resourceVersion`).
    Conflict,
    /// 403: the service account lacks a grant. The message is for logs.
    Forbidden(String),
    /// Anything else: unreachable, timed out, 5xx. The message is for logs.
    Other(String),
}

impl ApiFailure {
    /// Classifies a client error.
    pub fn from_kube(e: kube::Error) -> Self {
        match e {
            kube::Error::Api(status) if status.is_not_found() => ApiFailure::NotFound,
            kube::Error::Api(status) if status.code == 409 || status.is_conflict() => {
                ApiFailure::Conflict
            }
            kube::Error::Api(status) if status.code == 403 => ApiFailure::Forbidden(format!(
                "API server answered {} {}: {}",
                status.code, status.reason, status.message
            )),
            kube::Error::Api(status) => ApiFailure::Other(format!(
                "API server answered {} {}: {}",
                status.code, status.reason, status.message
            )),
            other => {
                // kube's and hyper's messages name only the outer layer; the cause (refused,
                // reset, certificate) is further down the chain.
                let mut message = other.to_string();
                let mut source = std::error::Error::source(&other);
                while let Some(cause) = source {
                    let text = cause.to_string();
                    if !message.contains(&text) {
                        message.push_str(": ");
                        message.push_str(&text);
                    }
                    source = cause.source();
                }
                ApiFailure::Other(message)
            }
        }
    }

    /// For logs.
    pub fn message(&self) -> String {
        match self {
            ApiFailure::NotFound => "not found".into(),
            ApiFailure::Conflict => "conflict".into(),
            ApiFailure::Forbidden(m) | ApiFailure::Other(m) => m.clone(),
        }
    }

    /// As an [`Error::Unavailable`] (for the request path: fail closed, caller retries).
    pub fn unavailable(self, what: &str) -> Error {
        match self {
            ApiFailure::NotFound => Error::Unavailable(format!("{what}: not found")),
            ApiFailure::Conflict => Error::Unavailable(format!("{what}: conflict")),
            ApiFailure::Forbidden(m) | ApiFailure::Other(m) => {
                Error::Unavailable(format!("{what}: {m}"))
            }
        }
    }
}

/// Runs one API call with a deadline; a timeout is an [`ApiFailure::Other`].
pub async fn call<T>(
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, ApiFailure> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ApiFailure::from_kube(e)),
        Err(_) => Err(ApiFailure::Other(format!(
            "no answer from the API server within {timeout:?}"
        ))),
    }
}

/// The `configurations.dapr.io/v1alpha1` resource.
pub fn configuration_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "dapr.io",
        "v1alpha1",
        "Configuration",
    ))
}

/// Reads the Dapr `Configuration` object `name` in `namespace`, as raw JSON; `None` when
/// it does not exist.
pub async fn get_configuration(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<Option<serde_json::Value>, ApiFailure> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &configuration_resource());
    match call(timeout, api.get(name)).await {
        Ok(obj) => Ok(Some(obj.data)),
        Err(ApiFailure::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// How many times a start-up read is tried when the API server does not answer in time or
/// fails (5xx, connection refused); the pauses between tries double from 250 ms (about 4 s
/// in all, besides the calls' own deadlines).
const START_ATTEMPTS: u32 = 5;

/// Reads Sentry's own Dapr `Configuration` (default `daprsystem`). A missing object means
/// defaults, with a warning. An API server that is slow or failing for a moment (a
/// control-plane upgrade, etcd recovering) is tried again a few times: a start that gave up
/// at once would wait out the kubelet's crash-loop back-off, up to five minutes. One that
/// stays unreachable, or refuses (403), stops the start.
pub async fn read_dapr_configuration(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<DaprConfiguration, Error> {
    let mut pause = Duration::from_millis(250);
    let mut attempt = 1;
    let answer = loop {
        match get_configuration(client, namespace, name, timeout).await {
            Err(ApiFailure::Other(m)) if attempt < START_ATTEMPTS => {
                tracing::warn!(namespace, configuration = name, attempt, error = %m, "cannot read the Dapr Configuration yet; trying again");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            answer => break answer,
        }
    };
    match answer {
        Ok(Some(data)) => serde_json::from_value(data)
            .map_err(|e| Error::Config(format!("Configuration {namespace}/{name}: {e}"))),
        Ok(None) => {
            tracing::warn!(
                namespace,
                configuration = name,
                "Dapr Configuration not found; using defaults (workloadCertTTL 24h, allowedClockSkew 15m, controlPlaneTrustDomain cluster.local)"
            );
            Ok(DaprConfiguration::default())
        }
        Err(e) => Err(Error::Config(format!(
            "cannot read Configuration {namespace}/{name}: {}",
            match e {
                ApiFailure::Forbidden(m) | ApiFailure::Other(m) => m,
                other => format!("{other:?}"),
            }
        ))),
    }
}

/// Builds the server configuration from flags; in kubernetes mode the Dapr `Configuration`
/// is read from the API server first.
pub async fn config_from_args(args: ServeArgs) -> Result<Config, Error> {
    if args.mode == Mode::Standalone {
        return args.into_config(None);
    }
    let namespace = sigil_pki::Namespace::new(&args.namespace)
        .map_err(|e| Error::Config(format!("NAMESPACE: {e}")))?;
    let timeout = api_timeout(args.request_timeout);
    let client = connect(args.kubeconfig.as_deref(), timeout).await?;
    let dapr = read_dapr_configuration(&client, namespace.as_str(), &args.config, timeout).await?;
    args.into_config(Some(dapr))
}
