//! `sigil serve`: wires configuration, CA material, validators and listeners together, and
//! drains gracefully on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sigil_pki::{Authority, CaParams, Clock};
use sigil_proto::sentry::ca_server::CaServer;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};

use crate::ca_service::CaService;
use crate::cluster;
use crate::config::{Config, Mode};
use crate::jwt::JwtState;
use crate::listener::{self, budget, GrpcConnection, Limits};
use crate::observe::{self, Metrics, Readiness};
use crate::rotation::{self, CaState};
use crate::serving_cert::{self, ServingCert, ServingIdentity};
use crate::store::file::FileJwtStore;
use crate::store::file::FileStore;
use crate::store::kubernetes::{KubernetesJwtStore, KubernetesStore};
use crate::store::CredentialStore;
use crate::store::JwtKeyStore;
use crate::validator::insecure::InsecureValidator;
use crate::validator::jwks::{self, JwksValidator};
use crate::validator::kubernetes::{KubernetesOptions, KubernetesValidator};
use crate::validator::Validators;
use crate::Error;

/// Largest request message accepted, just above the largest valid one: a CSR of 64 KiB
/// (`sigil_pki::csr::MAX_CSR_BYTES`), a token of 16 KiB (the validators' limit), 16
/// audiences of 512 bytes, ids and protobuf framing: about 88.6 KiB.
pub const MAX_REQUEST_BYTES: usize = 96 * 1024;
/// HTTP/2 flow-control windows. Small: the request byte budget charges what Sigil reads,
/// and these bound what a connection may send beyond that (bytes h2 has received but no
/// handler has read yet): one window per connection. 64 KiB is HTTP/2's initial value.
const STREAM_WINDOW: u32 = 64 * 1024;
const CONNECTION_WINDOW: u32 = 64 * 1024;
/// Largest header block accepted on a stream (hyper's default, made explicit).
const MAX_HEADER_LIST: u32 = 16 * 1024;
/// HTTP/2 rapid reset: the connection is closed (GOAWAY ENHANCE_YOUR_CALM) when more than
/// this many streams the client reset are waiting, at one moment, for the server to accept
/// them (a gauge, not a total: each accepted stream takes one off), or when the server has
/// reset this many streams over the connection's life for the client's errors (a total).
const MAX_PENDING_ACCEPT_RESETS: usize = 20;
const MAX_LOCAL_ERROR_RESETS: usize = 128;
/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Most callers (addresses, identities) whose rate-limit buckets are kept.
const RATE_LIMIT_KEYS: usize = 16 * 1024;

/// A running server, for `main` and for tests.
pub struct RunningServer {
    /// gRPC (TLS) address actually bound.
    pub grpc_addr: SocketAddr,
    /// Health address actually bound.
    pub healthz_addr: SocketAddr,
    /// Metrics address actually bound.
    pub metrics_addr: Option<SocketAddr>,
    /// The CA in force.
    pub state: Arc<CaState>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The serving certificate.
    pub serving: Arc<ServingCert>,
    /// JWT issuance state, when enabled.
    pub jwt: Option<Arc<JwtState>>,
    /// OIDC discovery server address actually bound, when enabled.
    pub oidc_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), Error>>,
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests finish (bounded), and waits.
    pub async fn shutdown(self) -> Result<(), Error> {
        let _ = self.shutdown.send(true);
        match self.task.await {
            Ok(r) => r,
            Err(source) => Err(Error::Task {
                what: "server",
                source,
            }),
        }
    }

    /// Waits until the server stops by itself (it only does on error).
    pub async fn wait(&mut self) -> Result<(), Error> {
        match (&mut self.task).await {
            Ok(r) => r,
            Err(source) => Err(Error::Task {
                what: "server",
                source,
            }),
        }
    }

    /// Asks the server to stop.
    pub fn trigger_shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
}

/// Loads the CA from the store, generating it first when the store is empty. Existing
/// material is never replaced; if it is invalid, start fails with the reason.
pub async fn load_or_generate(
    store: &dyn CredentialStore,
    config: &Config,
    clock: &dyn Clock,
) -> Result<(Authority, sigil_pki::CaFiles), Error> {
    let files = match store.load().await? {
        Some(files) => files,
        None => {
            let mut params = CaParams::new(config.trust_domain.clone(), config.namespace.clone());
            params.key_type = config.ca_key_type;
            params.clock_skew = config.policy.clock_skew;
            let generated = Authority::generate(&params, clock.now())?;
            let stored = store.store_if_absent(&generated).await?;
            if rotation::fingerprint(&stored) == rotation::fingerprint(&generated) {
                tracing::info!(store = %store.describe(), key_type = %config.ca_key_type, "generated a new root and issuer");
            } else {
                tracing::info!(store = %store.describe(), "another instance created the CA first; using its material");
            }
            stored
        }
    };
    let authority = Authority::load(&files, clock.now()).map_err(|e| {
        Error::Config(format!(
            "CA material in {} is not usable: {e}",
            store.describe()
        ))
    })?;
    Ok((authority, files))
}

/// Loads the JWKS in the background so that the first request does not wait for it.
fn started_jwks(validator: JwksValidator) -> Arc<JwksValidator> {
    let validator = Arc::new(validator);
    tracing::info!(source = %validator.cache().describe(), "JWKS validator enabled");
    let warm = validator.clone();
    tokio::spawn(async move { warm.warm_up().await });
    validator
}

/// The store and validators of one mode, and the cluster client in kubernetes mode.
struct Parts {
    store: Arc<dyn CredentialStore>,
    validators: Validators,
    kube_client: Option<kube::Client>,
}

/// The Secret/ConfigMap key for a JWT file setting (validated as a plain name in
/// kubernetes mode by the config).
fn data_key(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Kubernetes mode: the `dapr-trust-bundle` store and the validators (Kubernetes, the
/// default; JWKS joins here when the Configuration enables it).
async fn kubernetes_parts(
    config: &Config,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
) -> Result<Parts, Error> {
    let api_timeout = cluster::api_timeout(config.request_timeout);
    let client = cluster::connect(config.kubeconfig.as_deref(), api_timeout).await?;
    let store = KubernetesStore::new(client.clone(), config.namespace.as_str(), api_timeout)
        .with_mirror_failures(metrics.trust_bundle_mirror_failures.clone());
    let kubernetes = KubernetesValidator::new(
        client.clone(),
        KubernetesOptions {
            control_plane_trust_domain: config.trust_domain.clone(),
            control_plane_namespace: config.namespace.clone(),
            cache_ttl: config.token_cache_ttl,
            cache_size: config.token_cache_size,
            api_timeout,
            pod_lookup: config.pod_lookup,
            review_audiences_optional: config.token_review_audiences_optional,
        },
        metrics,
        clock.clone(),
    );
    let mut validators = Validators::new().with(Arc::new(kubernetes), true);
    // JWKS (spec.mtls.tokenValidators "jwks") joins, not as default.
    if let Some(jwks) = jwks::from_configuration(config, clock) {
        validators = validators.with(started_jwks(jwks?), false);
    }
    Ok(Parts {
        store: Arc::new(store),
        validators,
        kube_client: Some(client),
    })
}

/// Starts every part of the server and returns once it is listening and ready.
pub async fn start(config: Config, clock: Arc<dyn Clock>) -> Result<RunningServer, Error> {
    let metrics = Arc::new(Metrics::new());
    let standalone_jwks = match config.mode {
        Mode::Standalone => jwks::from_configuration(&config, clock.clone()).transpose()?,
        Mode::Kubernetes => None,
    };
    let file_store = || -> Arc<dyn CredentialStore> {
        Arc::new(FileStore::new(
            &config.credentials_dir,
            config.file_names.clone(),
        ))
    };
    let Parts {
        store,
        validators,
        kube_client,
    } = match (config.mode, standalone_jwks) {
        // Dapr: a configured JWKS validator is the only one, with no default.
        (Mode::Standalone, Some(jwks)) => Parts {
            store: file_store(),
            validators: Validators::new().with(started_jwks(jwks), false),
            kube_client: None,
        },
        (Mode::Standalone, None) => {
            if !config.listen.ip().is_loopback() && !config.insecure_allow_remote {
                return Err(Error::Config(format!(
                    "standalone mode uses the insecure validator, which believes any caller; refusing to listen on {} (a non-loopback address) without --insecure-allow-remote",
                    config.listen
                )));
            }
            tracing::warn!(
                "INSECURE VALIDATOR ENABLED: any caller can obtain a certificate for any identity. Use --mode kubernetes (or a JWKS validator) outside local development."
            );
            Parts {
                store: file_store(),
                validators: Validators::new().with(Arc::new(InsecureValidator), true),
                kube_client: None,
            }
        }
        (Mode::Kubernetes, _) => kubernetes_parts(&config, metrics.clone(), clock.clone()).await?,
    };

    let (authority, files) = load_or_generate(&*store, &config, &*clock).await?;
    let now = clock.now();
    for w in authority.expiry_warnings(now) {
        tracing::warn!(%w, "CA certificate expires soon");
    }
    metrics.record_authority(&authority, now);
    let state = Arc::new(CaState::new(authority, &files));
    drop(files);

    // JWT keys live next to the CA material: files, or the dapr-trust-bundle Secret.
    let jwt = match &config.jwt {
        Some(settings) => {
            let jwt_store: Arc<dyn JwtKeyStore> = match &kube_client {
                None => Arc::new(FileJwtStore::new(&settings.key_path, &settings.jwks_path)),
                Some(client) => Arc::new(KubernetesJwtStore::new(
                    client.clone(),
                    config.namespace.as_str(),
                    cluster::api_timeout(config.request_timeout),
                    data_key(&settings.key_path),
                    data_key(&settings.jwks_path),
                )),
            };
            let state = Arc::new(
                crate::jwt::load_or_generate(
                    &*jwt_store,
                    settings,
                    config.policy.clock_skew,
                    &*clock,
                )
                .await?
                .with_publish_delay(match settings.publish_delay {
                    Some(d) => sigil_pki::clock::to_time(d),
                    None => crate::jwt::publish_delay(config.reload_interval),
                }),
            );
            Some((jwt_store, state))
        }
        None => None,
    };

    let identity = ServingIdentity::from_config(&config);
    let issued = serving_cert::issue(&state.current(), &identity, &config.policy, clock.now())?;
    let serving = Arc::new(ServingCert::new(issued));

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let readiness = Readiness::default();
    let healthz_addr = observe::spawn_healthz(
        config.healthz,
        readiness.clone(),
        config.header_timeout,
        shutdown_rx.clone(),
    )
    .await?;
    let metrics_addr = match config.metrics {
        Some(addr) => Some(
            observe::spawn_metrics(
                addr,
                metrics.clone(),
                config.header_timeout,
                shutdown_rx.clone(),
            )
            .await?,
        ),
        None => None,
    };
    let limits = Limits {
        max_connections: config.max_connections,
        header_timeout: config.header_timeout,
        idle_timeout: config.idle_timeout,
    };

    let oidc_addr = match (&config.oidc, &jwt) {
        (Some(oidc), Some((_, state))) => Some(
            crate::oidc::spawn(
                oidc,
                state.clone(),
                config.reload_interval,
                limits,
                shutdown_rx.clone(),
            )
            .await?,
        ),
        (Some(_), None) => {
            return Err(Error::Config(
                "--oidc-enabled requires --jwt-enabled".into(),
            ))
        }
        _ => None,
    };
    if let Some((jwt_store, state)) = &jwt {
        tokio::spawn(crate::jwt::watch_store(
            jwt_store.clone(),
            state.clone(),
            clock.clone(),
            metrics.clone(),
            config.reload_interval,
            shutdown_rx.clone(),
        ));
    }

    if let (Some(signer), Some(client)) = (&config.pod_certificate_signer, &kube_client) {
        let name = crate::pod_certificates::signer_name::SignerName::parse(signer)
            .map_err(Error::Config)?;
        crate::pod_certificates::spawn(
            crate::pod_certificates::PodCertificateSigner::new(
                client.clone(),
                name,
                crate::pod_certificates::Rules {
                    control_plane_trust_domain: config.trust_domain.clone(),
                    control_plane_namespace: config.namespace.clone(),
                    api_timeout: cluster::api_timeout(config.request_timeout),
                },
                config.cluster_domain.clone(),
                config.policy,
                state.clone(),
                metrics.clone(),
                clock.clone(),
            ),
            shutdown_rx.clone(),
        );
    }
    tokio::spawn(rotation::watch_store(
        rotation::Watcher::new().allowing_root_replacement(config.allow_ca_root_replacement),
        store.clone(),
        state.clone(),
        clock.clone(),
        metrics.clone(),
        config.reload_interval,
        shutdown_rx.clone(),
    ));
    tokio::spawn(serving_cert::keep_fresh(
        serving.clone(),
        state.clone(),
        identity,
        config.policy,
        clock.clone(),
        metrics.clone(),
        shutdown_rx.clone(),
    ));
    // Expiry gauges move with time even when the CA does not change.
    {
        let (state, metrics, clock, mut shutdown) = (
            state.clone(),
            metrics.clone(),
            clock.clone(),
            shutdown_rx.clone(),
        );
        tokio::spawn(async move {
            let mut last_warned = None;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                    _ = shutdown.changed() => return,
                }
                let ca = state.current();
                let now = clock.now();
                metrics.record_authority(&ca, now);
                let day = now.date();
                if last_warned != Some(day) {
                    for w in ca.expiry_warnings(now) {
                        tracing::warn!(%w, "CA certificate expires soon");
                    }
                    last_warned = Some(day);
                }
            }
        });
    }

    let tcp_listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::Config(format!("cannot listen on {}: {e}", config.listen)))?;
    let grpc_addr = tcp_listener
        .local_addr()
        .map_err(|e| Error::io("grpc socket", e))?;
    let acceptor = listener::tls::acceptor(serving.clone(), listener::tls::Profile::Grpc)?;
    // --max-concurrent-requests also sizes the request byte budget: room for that many
    // requests of the largest size, so the flag bounds memory as well as signing.
    let request_cost = MAX_REQUEST_BYTES + budget::REQUEST_OVERHEAD;
    let request_budget = Arc::new(budget::Pool::new(
        config.max_concurrent_requests.saturating_mul(request_cost),
        Some(metrics.request_buffer_bytes.clone()),
    ));

    let service = CaService {
        state: state.clone(),
        validators,
        policy: config.policy,
        metrics: metrics.clone(),
        clock: clock.clone(),
        control_plane_namespace: config.namespace.clone(),
        admission: crate::validator::admit::Admission {
            control_plane_namespace: config.namespace.clone(),
            // Standalone, the control plane shares its namespace (`default`) with the apps.
            jwks_in_control_plane_namespace: config.jwks_allow_control_plane_namespace
                || config.mode == Mode::Standalone,
        },
        cluster_domain: config.cluster_domain.clone(),
        limiter: Arc::new(Semaphore::new(config.max_concurrent_requests)),
        queue_timeout: config.request_timeout,
        jwt: jwt.as_ref().map(|(_, state)| state.clone()),
        peer_limit: crate::rate_limit::Limiter::new(config.peer_rate, RATE_LIMIT_KEYS),
        identity_limit: crate::rate_limit::Limiter::new(config.identity_rate, RATE_LIMIT_KEYS),
    };

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<CaServer<CaService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(sigil_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Config(format!("reflection: {e}")))?;

    // Accepted and handshaken connections go to tonic through a channel; the accept loop,
    // the connection cap and the deadlines are the listener module's.
    let (conn_tx, conn_rx) = mpsc::channel(256);
    let per_connection = budget::CONNECTION_SHARE_REQUESTS * request_cost;
    listener::spawn_accept_loop(
        "grpc",
        tcp_listener,
        limits.max_connections,
        shutdown_rx.clone(),
        move |tcp, peer, slot| {
            let acceptor = acceptor.clone();
            let conn_tx = conn_tx.clone();
            async move {
                let _ = tcp.set_nodelay(true);
                let info = tonic::transport::server::TcpConnectInfo {
                    local_addr: tcp.local_addr().ok(),
                    remote_addr: Some(peer),
                };
                if let Some(tls) =
                    listener::tls_handshake("grpc", &acceptor, tcp, peer, limits.header_timeout)
                        .await
                {
                    let conn = GrpcConnection::new(tls, info, slot, limits, per_connection);
                    let _ = conn_tx.send(Ok::<_, std::io::Error>(conn)).await;
                }
            }
        },
    );

    // The budget layer refuses longer messages first (RESOURCE_EXHAUSTED); tonic's own
    // limit stays as a second line.
    let ca_server = CaServer::new(service)
        .max_decoding_message_size(MAX_REQUEST_BYTES)
        .max_encoding_message_size(4 * 1024 * 1024);
    let mut serve_shutdown = shutdown_rx.clone();
    let readiness_in_task = readiness.clone();
    // Memory an unauthenticated peer can make the gRPC listener hold (defaults in brackets;
    // SECURITY.md has the same arithmetic):
    //   request bytes read:   --max-concurrent-requests x (MAX_REQUEST_BYTES +
    //                         REQUEST_OVERHEAD) = 256 x 112 KiB = 28 MiB in all, and
    //                         CONNECTION_SHARE_REQUESTS x 112 KiB = 448 KiB per connection;
    //   bytes not yet read:   --max-connections x CONNECTION_WINDOW = 512 x 64 KiB = 32 MiB;
    //   headers:              at most 448 KiB / 16 KiB = 28 charged streams per connection,
    //                         each header block at most MAX_HEADER_LIST; streams beyond the
    //                         share are answered at once and hold nothing.
    // Time: --header-timeout for TLS and the first request, --request-timeout for a request
    // (stalled bodies included), --idle-timeout between requests, --keepalive-interval +
    // --keepalive-timeout for a peer that stops answering PINGs.
    let grpc = tonic::transport::Server::builder()
        .timeout(config.request_timeout)
        .max_concurrent_streams(Some(config.max_concurrent_streams))
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_ACCEPT_RESETS))
        .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
        .http2_max_header_list_size(Some(MAX_HEADER_LIST))
        // HTTP/2 keepalive: a PING after --keepalive-interval without a frame from the
        // client, and the connection closed when the answer takes longer than
        // --keepalive-timeout (a peer that vanished, or one that stopped reading).
        .http2_keepalive_interval(Some(config.keepalive_interval))
        .http2_keepalive_timeout(Some(config.keepalive_timeout))
        .layer(budget::BudgetLayer::new(
            request_budget.clone(),
            MAX_REQUEST_BYTES,
        ))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(ca_server)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::ReceiverStream::new(conn_rx),
            async move {
                let _ = serve_shutdown.changed().await;
                readiness_in_task.set(false);
                health_reporter
                    .set_not_serving::<CaServer<CaService>>()
                    .await;
                tracing::info!("shutting down: no new connections, draining in-flight requests");
            },
        );
    let mut drain_shutdown = shutdown_rx.clone();
    let task = tokio::spawn(async move {
        tokio::pin!(grpc);
        tokio::select! {
            r = &mut grpc => return r.map_err(|e| Error::Serve(e.to_string())),
            _ = drain_shutdown.changed() => {}
        }
        match tokio::time::timeout(DRAIN_TIMEOUT, grpc).await {
            Ok(r) => r.map_err(|e| Error::Serve(e.to_string())),
            Err(_) => {
                tracing::warn!("drain timed out; closing remaining connections");
                Ok(())
            }
        }
    });

    readiness.set(true);
    tracing::info!(
        grpc = %grpc_addr,
        healthz = %healthz_addr,
        metrics = ?metrics_addr,
        oidc = ?oidc_addr,
        trust_domain = %config.trust_domain,
        sentry_id = %config.sentry_id(),
        "sigil is serving"
    );
    Ok(RunningServer {
        grpc_addr,
        healthz_addr,
        metrics_addr,
        state,
        metrics,
        serving,
        jwt: jwt.map(|(_, state)| state),
        oidc_addr,
        shutdown: shutdown_tx,
        task,
    })
}
