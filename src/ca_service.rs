//! The gRPC service `dapr.proto.sentry.v1.CA`: request -> validator -> CSR checks -> issue ->
//! response, in Dapr's order and with Dapr's status codes (see [`crate::Error::code`]).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sigil_pki::issue::LeafExtras;
use sigil_pki::{Clock, IssuePolicy, IssuedCertificate, Namespace, SpiffeId, ValidatedCsr};
use sigil_proto::sentry::ca_server::Ca;
use sigil_proto::{SignCertificateRequest, SignCertificateResponse};
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use crate::jwt::{IssuedJwts, JwtState};
use crate::observe::{Metrics, ReasonLabel, RequestLabels};
use crate::rate_limit::Limiter;
use crate::rotation::CaState;
use crate::validator::admit::{control_plane_dns_names, Admission};
use crate::validator::{Claims, Identity, Validators};
use crate::Error;

/// Everything a signing request needs.
pub struct CaService {
    /// The CA in force.
    pub state: Arc<CaState>,
    /// Enabled validators.
    pub validators: Validators,
    /// Leaf lifetime policy.
    pub policy: IssuePolicy,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// Control-plane namespace (for the control-plane DNS names).
    pub control_plane_namespace: Namespace,
    /// Rules every proven identity must pass.
    pub admission: Admission,
    /// Cluster DNS domain.
    pub cluster_domain: String,
    /// Bounds the requests processed at once.
    pub limiter: Arc<Semaphore>,
    /// How long a request may wait for a slot.
    pub queue_timeout: Duration,
    /// JWT-SVID issuance, when enabled.
    pub jwt: Option<Arc<JwtState>>,
    /// Requests per caller address, checked before any work.
    pub peer_limit: Limiter<IpAddr>,
    /// Requests per proven identity (trust domain, namespace, app id), checked before signing.
    pub identity_limit: Limiter<String>,
}

/// What a successful request produced.
struct Signed {
    identity: Identity,
    issued: IssuedCertificate,
    authority: Arc<sigil_pki::Authority>,
    jwts: Option<IssuedJwts>,
}

impl CaService {
    async fn sign(
        &self,
        req: &SignCertificateRequest,
        validator_name: &mut &'static str,
    ) -> Result<Signed, Error> {
        let validator = self.validators.select(req.token_validator)?;
        *validator_name = validator.kind().name();
        let claims = Claims {
            id: req.id.clone(),
            token: req.token.clone(),
            trust_domain: req.trust_domain.clone(),
            namespace: req.namespace.clone(),
            csr_present: !req.certificate_signing_request.is_empty(),
        };
        let identity = validator.validate(&claims).await?;
        self.admission.admit(validator.kind(), &identity)?;
        let key = format!(
            "{}/{}/{}",
            identity.trust_domain, identity.namespace, identity.app_id
        );
        if let Err(wait) = self.identity_limit.check(&key, Instant::now()) {
            return Err(Error::RateLimited(format!(
                "too many signing requests for {}/{}; retry in {}s",
                identity.namespace,
                identity.app_id,
                wait.as_secs().max(1)
            )));
        }
        let csr = ValidatedCsr::parse(&req.certificate_signing_request).map_err(Error::Csr)?;
        let id = SpiffeId::workload(
            &identity.trust_domain,
            &identity.namespace,
            &identity.app_id,
        );
        // Refuse bad audiences before anything is signed.
        let audiences = match &self.jwt {
            Some(jwt) => Some(jwt.audiences(&identity.trust_domain, &req.jwt_audiences)?),
            None => None,
        };
        let extras = LeafExtras {
            dns_names: control_plane_dns_names(
                &identity,
                &self.control_plane_namespace,
                &self.cluster_domain,
            ),
            container_images_json: identity.container_images_json.clone(),
        };
        let authority = self.state.current();
        let now = self.clock.now();
        let issued = authority
            .issue(&csr, &id, &extras, &self.policy, now)
            .map_err(Error::Signing)?;
        let jwts = match (&self.jwt, audiences) {
            (Some(jwt), Some(audiences)) => Some(jwt.issue(&id, &audiences, now)?),
            _ => None,
        };
        Ok(Signed {
            identity,
            issued,
            authority,
            jwts,
        })
    }
}

#[tonic::async_trait]
impl Ca for CaService {
    async fn sign_certificate(
        &self,
        request: Request<SignCertificateRequest>,
    ) -> Result<Response<SignCertificateResponse>, Status> {
        let started = Instant::now();
        self.metrics.sign_received.inc();
        let remote = request.remote_addr();
        let peer = remote
            .map(|a| a.to_string())
            .unwrap_or_else(|| "unknown".into());
        let req = request.into_inner();
        let mut validator_name = "none";

        let over_limit = remote.and_then(|a| self.peer_limit.check(&a.ip(), started).err());
        let result = match over_limit {
            Some(wait) => Err(Error::RateLimited(format!(
                "too many signing requests from {}; retry in {}s",
                remote.map(|a| a.ip().to_string()).unwrap_or_default(),
                wait.as_secs().max(1)
            ))),
            None => match tokio::time::timeout(self.queue_timeout, self.limiter.acquire()).await {
                Ok(Ok(_permit)) => self.sign(&req, &mut validator_name).await,
                _ => Err(Error::NotReady(
                    "too many signing requests in flight; retry".into(),
                )),
            },
        };

        let code = match &result {
            Ok(_) => tonic::Code::Ok,
            Err(e) => e.code(),
        };
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                validator: validator_name.into(),
                code: format!("{code:?}"),
            })
            .inc();

        match result {
            Ok(Signed {
                identity,
                issued,
                authority,
                jwts,
            }) => {
                self.metrics.sign_success.inc();
                if let Some(j) = &jwts {
                    self.metrics
                        .jwt_issued
                        .inc_by(1 + j.per_audience.len() as u64);
                }
                self.metrics
                    .sign_duration
                    .observe(started.elapsed().as_secs_f64());
                crate::audit::issued(validator_name, &identity, &issued, jwts.is_some(), &peer);
                let valid_until = prost_types::Timestamp {
                    seconds: issued.not_after.unix_timestamp(),
                    nanos: 0,
                };
                Ok(Response::new(SignCertificateResponse {
                    workload_certificate: issued.chain_pem.into_bytes(),
                    trust_chain_certificates: vec![authority.anchors_pem().as_bytes().to_vec()],
                    valid_until: Some(valid_until),
                    jwt: jwts.as_ref().map(|j| j.jwt.clone()),
                    per_audience_jwts: jwts.map(|j| j.per_audience).unwrap_or_default(),
                }))
            }
            Err(e) => {
                self.metrics
                    .sign_failure
                    .get_or_create(&ReasonLabel {
                        reason: e.reason().into(),
                    })
                    .inc();
                let asked = crate::audit::Asked {
                    trust_domain: &req.trust_domain,
                    namespace: &req.namespace,
                    app_id: &req.id,
                };
                crate::audit::refused(validator_name, &asked, e.code(), &e, &peer);
                Err(e.into())
            }
        }
    }
}
