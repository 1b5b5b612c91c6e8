//! An mTLS echo pair on `sigil-client`, against a running Sigil (`sigil serve`):
//!
//! ```text
//! sigil serve &
//! cargo run -p sigil-client --example mtls_echo -- [SENTRY_ADDR] [TRUST_ANCHORS] [ROUNDS]
//! ```
//!
//! Defaults: `127.0.0.1:50001`, the credentials of a default `sigil serve`
//! (`$SIGIL_DATA_DIR/credentials/ca.crt`, else `~/.local/share/sigil/credentials/ca.crt`),
//! and 5 rounds one second apart. Two workloads, `echo-server` and `echo-client`, each get
//! their own SVID; the server accepts only `echo-client`, the client accepts only
//! `echo-server`. Each round opens a new connection, so renewed certificates show up as
//! new serials without restarting anything.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sigil_client::{
    peer_spiffe_id, PeerAuthorizer, SourceConfig, SpiffeId, SvidSource, TrustAnchorSource,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

fn default_anchors() -> PathBuf {
    let data = std::env::var_os("SIGIL_DATA_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_DATA_HOME").map(|d| PathBuf::from(d).join("sigil")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share/sigil")))
        .unwrap_or_else(|| PathBuf::from(".sigil"));
    data.join("credentials").join("ca.crt")
}

fn workload(sentry: &str, anchors: &Path, app: &str) -> Result<SvidSource, sigil_client::Error> {
    let config = SourceConfig::new(
        sentry,
        app,
        "default",
        TrustAnchorSource::File(anchors.to_path_buf()),
    )?;
    SvidSource::start(config)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let sentry = args.next().unwrap_or_else(|| "127.0.0.1:50001".into());
    let anchors = args
        .next()
        .filter(|a| !a.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(default_anchors);
    let rounds: u32 = args.next().map(|r| r.parse()).transpose()?.unwrap_or(5);

    let server = workload(&sentry, &anchors, "echo-server")?;
    let client = workload(&sentry, &anchors, "echo-client")?;
    for s in [&server, &client] {
        match tokio::time::timeout(Duration::from_secs(30), s.wait_for_svid()).await {
            Ok(Ok(svid)) => println!(
                "{}: certificate {} valid until {}",
                svid.spiffe_id(),
                svid.serial_hex(),
                svid.not_after()
            ),
            _ => {
                return Err(
                    format!("no certificate for {}: {:?}", s.spiffe_id(), s.status()).into(),
                )
            }
        }
    }

    let client_id = client.spiffe_id().clone();
    let server_id = server.spiffe_id().clone();
    let acceptor = TlsAcceptor::from(Arc::new(
        server.server_config(PeerAuthorizer::one_of([client_id]))?,
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let tls = match acceptor.accept(tcp).await {
                    Ok(t) => t,
                    Err(e) => return eprintln!("server: handshake refused: {e}"),
                };
                let peer: Option<SpiffeId> = peer_spiffe_id(tls.get_ref().1.peer_certificates());
                let (read, mut write) = tokio::io::split(tls);
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let who = peer.as_ref().map(|p| p.to_string()).unwrap_or_default();
                    if write
                        .write_all(format!("echo to {who}: {line}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
    });

    let connector = TlsConnector::from(Arc::new(
        client.client_config(PeerAuthorizer::one_of([server_id]))?,
    ));
    for round in 1..=rounds {
        let tcp = TcpStream::connect(addr).await?;
        let tls = connector
            .connect(rustls_pki_types::ServerName::try_from("echo-server")?, tcp)
            .await?;
        let server_serial = client_side_serial(&tls);
        let (read, mut write) = tokio::io::split(tls);
        write
            .write_all(format!("hello #{round}\n").as_bytes())
            .await?;
        let mut lines = BufReader::new(read).lines();
        let reply = lines.next_line().await?.unwrap_or_default();
        println!(
            "round {round}: {reply} (server cert {server_serial}, client cert {})",
            client
                .current()
                .map(|s| s.serial_hex().to_string())
                .unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!("client status: {:?}", client.status());
    server.stop();
    client.stop();
    Ok(())
}

fn client_side_serial(tls: &tokio_rustls::client::TlsStream<TcpStream>) -> String {
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|leaf| {
            use x509_parser::prelude::FromDer;
            x509_parser::certificate::X509Certificate::from_der(leaf)
                .ok()
                .map(|(_, c)| c.raw_serial_as_string().replace(':', ""))
        })
        .unwrap_or_default()
}
