//! Serving the API: plain HTTP or HTTPS (rustls with the `ring` provider,
//! plus optional mutual TLS), hyper's limits above the API's, and a graceful
//! shutdown.
//!
//! A `[tls]` config section turns HTTPS on. With `client_ca_file` set, every
//! client must present a certificate issued by that CA; it is checked during
//! the handshake, so unauthenticated peers never reach the router.

use axum_server::tls_rustls::RustlsConfig;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Why HTTPS could not be set up or the server stopped. Every TLS setup error
/// names the offending file.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reading TLS {what} file {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("parsing PEM in TLS {what} file {path}: {source}")]
    Pem {
        what: &'static str,
        path: String,
        source: pem::Error,
    },
    #[error("no PEM certificate found in TLS {what} file {path}")]
    NoCertificate { what: &'static str, path: String },
    #[error("no PEM private key (PKCS#8, PKCS#1 or SEC1) found in TLS key file {path}")]
    NoKey { path: String },
    #[error("invalid CA certificate in TLS client CA file {path}: {source}")]
    BadCa { path: String, source: rustls::Error },
    #[error("building client verifier from TLS client CA file {path}: {source}")]
    Verifier {
        path: String,
        source: rustls::server::VerifierBuilderError,
    },
    #[error("TLS key file {key} does not fit certificate file {cert}: {source}")]
    KeyMismatch {
        key: String,
        cert: String,
        source: rustls::Error,
    },
    #[error("configuring TLS protocol versions: {0}")]
    Protocol(rustls::Error),
    /// Setting up the listener or serving failed.
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// `[tls]` section of the config.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// When set, mutual TLS: clients must present a certificate signed by
    /// this CA (PEM, may hold several CA certificates).
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

/// Build the rustls server config from `cfg`.
///
/// Every error names the offending file: missing/unreadable file, no
/// certificate, no private key, unusable CA, key not matching the certificate.
pub fn server_config(cfg: &TlsConfig) -> Result<Arc<ServerConfig>, ServeError> {
    // Explicit provider rather than the process default: stays correct even if
    // another dependency ever enables rustls' aws-lc-rs feature as well.
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    let certs = read_certs(&cfg.cert_file, "certificate")?;
    let key = read_key(&cfg.key_file)?;

    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(ServeError::Protocol)?;

    let builder = match &cfg.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca_file, "client CA")? {
                roots.add(cert).map_err(|source| ServeError::BadCa {
                    path: shown(ca_file),
                    source,
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|source| ServeError::Verifier {
                    path: shown(ca_file),
                    source,
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };

    let mut config =
        builder
            .with_single_cert(certs, key)
            .map_err(|source| ServeError::KeyMismatch {
                key: shown(&cfg.key_file),
                cert: shown(&cfg.cert_file),
                source,
            })?;
    // Prefer HTTP/2 and fall back to HTTP/1.1; the server speaks both.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_file(path: &Path, what: &'static str) -> Result<Vec<u8>, ServeError> {
    std::fs::read(path).map_err(|source| ServeError::Read {
        what,
        path: shown(path),
        source,
    })
}

fn read_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, ServeError> {
    let pem = read_file(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| ServeError::Pem {
            what,
            path: shown(path),
            source,
        })?;
    if certs.is_empty() {
        return Err(ServeError::NoCertificate {
            what,
            path: shown(path),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, ServeError> {
    let pem = read_file(path, "key")?;
    match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => Err(ServeError::NoKey { path: shown(path) }),
        Err(source) => Err(ServeError::Pem {
            what: "key",
            path: shown(path),
            source,
        }),
    }
}

/// Serve `app` on `listener`, over TLS when `tls` is given, until
/// `shutdown` resolves, then stop accepting and drain in-flight connections
/// for at most `grace` before closing whatever is left.
///
/// hyper's own limits are set well above the API's ([`crate::limits`]),
/// so that oversized request heads get the API's JSON 414 / 431 rather than
/// hyper's bare ones; a client that does not finish its request head within
/// `head_timeout` is disconnected (slowloris).
///
/// A failed TLS handshake (plain HTTP, untrusted client cert, scanner noise)
/// only drops that connection; the server keeps accepting.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    tls: Option<Arc<ServerConfig>>,
    head_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> Result<(), ServeError> {
    let io = |what: &'static str| move |source| ServeError::Io { what, source };
    let listener = listener
        .into_std()
        .map_err(io("handing the listener to the server"))?;
    let handle = axum_server::Handle::new();
    // The handle remembers the request, so it is fine if this fires before
    // the server has started.
    let trigger = {
        let handle = handle.clone();
        tokio::spawn(async move {
            shutdown.await;
            handle.graceful_shutdown(Some(grace));
        })
    };
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    let result = match tls {
        Some(tls) => {
            let mut server =
                axum_server::tls_rustls::from_tcp_rustls(listener, RustlsConfig::from_config(tls))
                    .map_err(io("setting up the TLS listener"))?
                    .handle(handle)
                    // Handshake failures are routine on a public port: debug,
                    // not warn, so they cannot flood the log.
                    .accept_error_handler(|peer: Option<&SocketAddr>, err: &std::io::Error| {
                        tracing::debug!(peer = ?peer, error = %err, "TLS connection rejected");
                    });
            tune(server.http_builder(), head_timeout);
            server.serve(service).await.map_err(io("TLS server failed"))
        }
        None => {
            let mut server = axum_server::from_tcp(listener)
                .map_err(io("setting up the listener"))?
                .handle(handle);
            tune(server.http_builder(), head_timeout);
            server
                .serve(service)
                .await
                .map_err(io("HTTP server failed"))
        }
    };
    trigger.abort();
    result
}

/// hyper's limits above the API's (see [`serve`]).
fn tune(
    b: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    head_timeout: Duration,
) {
    use crate::limits::{MAX_HEADERS, MAX_HEADER_BYTES, MAX_URI_BYTES};
    let head = 4 * (MAX_URI_BYTES + MAX_HEADER_BYTES);
    b.http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(head_timeout)
        .max_buf_size(head.max(64 * 1024))
        .max_headers(MAX_HEADERS * 4);
    b.http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_header_list_size(u32::try_from(head).unwrap_or(u32::MAX));
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::sync::{oneshot, Notify};

    /// A CA and the PEM files signed by it, in a tempdir.
    struct Pki {
        dir: tempfile::TempDir,
        ca_pem: String,
        /// Client cert + key in one PEM, as `reqwest::Identity` wants it.
        client_identity: String,
        /// Client signed by an unrelated self-signed CA.
        rogue_identity: String,
    }

    fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        (params.self_signed(&key).unwrap(), key)
    }

    fn leaf(
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
        ca: &rcgen::Certificate,
        ca_key: &KeyPair,
    ) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, ca, ca_key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn pki() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let (ca_cert, ca_key) = ca("engram test CA");
        let (server_cert, server_key) = leaf(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
            &ca_cert,
            &ca_key,
        );
        let (client_cert, client_key) = leaf(
            &["client"],
            ExtendedKeyUsagePurpose::ClientAuth,
            &ca_cert,
            &ca_key,
        );
        let (rogue_ca, rogue_ca_key) = ca("rogue CA");
        let (rogue_cert, rogue_key) = leaf(
            &["client"],
            ExtendedKeyUsagePurpose::ClientAuth,
            &rogue_ca,
            &rogue_ca_key,
        );
        std::fs::write(dir.path().join("server.pem"), server_cert).unwrap();
        std::fs::write(dir.path().join("server.key"), server_key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        Pki {
            ca_pem: ca_cert.pem(),
            client_identity: format!("{client_cert}{client_key}"),
            rogue_identity: format!("{rogue_cert}{rogue_key}"),
            dir,
        }
    }

    impl Pki {
        fn config(&self, mtls: bool) -> TlsConfig {
            TlsConfig {
                cert_file: self.dir.path().join("server.pem"),
                key_file: self.dir.path().join("server.key"),
                client_ca_file: mtls.then(|| self.dir.path().join("ca.pem")),
            }
        }

        /// Client trusting only our CA, optionally presenting a certificate.
        fn client(&self, addr: SocketAddr, identity: Option<&str>) -> reqwest::Client {
            let mut builder = reqwest::Client::builder()
                .use_rustls_tls()
                .tls_built_in_root_certs(false)
                .add_root_certificate(
                    reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap(),
                )
                .resolve("localhost", addr)
                .no_proxy()
                .timeout(Duration::from_secs(10));
            if let Some(pem) = identity {
                builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
            }
            builder.build().unwrap()
        }
    }

    struct Running {
        addr: SocketAddr,
        stop: oneshot::Sender<()>,
        task: tokio::task::JoinHandle<Result<(), ServeError>>,
    }

    async fn start(cfg: &TlsConfig, app: axum::Router, grace: Duration) -> Running {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tls = server_config(cfg).unwrap();
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(
            listener,
            app,
            Some(tls),
            Duration::from_secs(30),
            async move {
                let _ = rx.await;
            },
            grace,
        ));
        Running { addr, stop, task }
    }

    fn ping_app() -> axum::Router {
        axum::Router::new().route("/ping", get(|| async { "pong" }))
    }

    async fn ping(client: &reqwest::Client, addr: SocketAddr) -> reqwest::Result<String> {
        let url = format!("https://localhost:{}/ping", addr.port());
        client
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await
    }

    async fn stop(running: Running) {
        running.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), running.task)
            .await
            .expect("serve did not return after shutdown")
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn tls_serves_https_and_survives_plain_http() {
        let pki = pki();
        let running = start(&pki.config(false), ping_app(), Duration::from_secs(5)).await;
        let client = pki.client(running.addr, None);

        assert_eq!(ping(&client, running.addr).await.unwrap(), "pong");

        let plain = format!("http://localhost:{}/ping", running.addr.port());
        let res = client.get(plain).send().await;
        assert!(
            res.is_err(),
            "plain HTTP on the TLS port must fail: {res:?}"
        );

        // A fresh client (new connection) still gets served.
        let client = pki.client(running.addr, None);
        assert_eq!(ping(&client, running.addr).await.unwrap(), "pong");
        stop(running).await;
    }

    #[tokio::test]
    async fn tls_mutual_requires_client_cert_from_ca() {
        let pki = pki();
        let running = start(&pki.config(true), ping_app(), Duration::from_secs(5)).await;

        // TLS 1.3: the client learns of the refusal from the server's alert.
        let anonymous = ping(&pki.client(running.addr, None), running.addr).await;
        assert_refused(&anonymous, "CertificateRequired");

        let trusted = pki.client(running.addr, Some(&pki.client_identity));
        assert_eq!(ping(&trusted, running.addr).await.unwrap(), "pong");

        let rogue = ping(
            &pki.client(running.addr, Some(&pki.rogue_identity)),
            running.addr,
        )
        .await;
        assert_refused(&rogue, "UnknownCA");

        // The refusals did not hurt the server.
        let trusted = pki.client(running.addr, Some(&pki.client_identity));
        assert_eq!(ping(&trusted, running.addr).await.unwrap(), "pong");
        stop(running).await;
    }

    /// The request failed because the server sent the TLS alert `alert`.
    fn assert_refused(res: &reqwest::Result<String>, alert: &str) {
        let err = format!("{:?}", res.as_ref().expect_err("must be refused"));
        assert!(err.contains(&format!("AlertReceived({alert})")), "{err}");
    }

    #[test]
    fn tls_server_config_sets_alpn() {
        let pki = pki();
        for mtls in [false, true] {
            let cfg = server_config(&pki.config(mtls)).unwrap();
            assert_eq!(
                cfg.alpn_protocols,
                vec![b"h2".to_vec(), b"http/1.1".to_vec()]
            );
        }
    }

    #[test]
    fn tls_server_config_errors_name_the_file() {
        let pki = pki();
        let err_of = |cfg: &TlsConfig| format!("{:#}", server_config(cfg).unwrap_err());

        let mut cfg = pki.config(false);
        cfg.cert_file = pki.dir.path().join("missing.pem");
        let err = err_of(&cfg);
        assert!(err.contains(&cfg.cert_file.display().to_string()), "{err}");

        // A file with a certificate but no key.
        let mut cfg = pki.config(false);
        cfg.key_file = pki.dir.path().join("ca.pem");
        let err = err_of(&cfg);
        assert!(err.contains(&cfg.key_file.display().to_string()), "{err}");
        assert!(err.contains("no PEM private key"), "{err}");

        let garbage = pki.dir.path().join("garbage.pem");
        std::fs::write(&garbage, "this is not a certificate\n").unwrap();
        let mut cfg = pki.config(true);
        cfg.client_ca_file = Some(garbage.clone());
        let err = err_of(&cfg);
        assert!(err.contains(&garbage.display().to_string()), "{err}");

        // Well-formed PEM whose content is not a certificate.
        let bad_der = pki.dir.path().join("bad-der.pem");
        std::fs::write(
            &bad_der,
            "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        cfg.client_ca_file = Some(bad_der.clone());
        let err = err_of(&cfg);
        assert!(err.contains(&bad_der.display().to_string()), "{err}");
    }

    #[test]
    fn tls_config_deserializes_strictly() {
        let cfg: TlsConfig =
            serde_json::from_str(r#"{"cert_file": "c.pem", "key_file": "k.pem"}"#).unwrap();
        assert_eq!(cfg.client_ca_file, None);
        let typo = r#"{"cert_file": "c.pem", "key_file": "k.pem", "client_ca": "ca.pem"}"#;
        assert!(serde_json::from_str::<TlsConfig>(typo).is_err());
    }

    #[tokio::test]
    async fn tls_graceful_shutdown_drains_in_flight_requests() {
        let pki = pki();
        let entered = Arc::new(Notify::new());
        let app = {
            let entered = entered.clone();
            ping_app().route(
                "/slow",
                get(move || async move {
                    entered.notify_one();
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    "done"
                }),
            )
        };
        let running = start(&pki.config(false), app, Duration::from_secs(5)).await;
        let addr = running.addr;
        let client = pki.client(addr, None);
        let slow = tokio::spawn({
            let client = client.clone();
            async move {
                let url = format!("https://localhost:{}/slow", addr.port());
                client.get(url).send().await?.text().await
            }
        });
        entered.notified().await;
        stop(running).await;
        assert_eq!(slow.await.unwrap().unwrap(), "done");

        // Not accepting any more.
        assert!(ping(&pki.client(addr, None), addr).await.is_err());
    }

    #[tokio::test]
    async fn tls_graceful_shutdown_is_bounded_by_grace() {
        let pki = pki();
        let entered = Arc::new(Notify::new());
        let finished = Arc::new(AtomicBool::new(false));
        let app = {
            let (entered, finished) = (entered.clone(), finished.clone());
            ping_app().route(
                "/hang",
                get(move || async move {
                    entered.notify_one();
                    std::future::pending::<()>().await;
                    finished.store(true, Ordering::SeqCst);
                }),
            )
        };
        let running = start(&pki.config(false), app, Duration::from_millis(200)).await;
        let addr = running.addr;
        let client = pki.client(addr, None);
        let hung = tokio::spawn(async move {
            let url = format!("https://localhost:{}/hang", addr.port());
            client.get(url).send().await
        });
        entered.notified().await;
        let started = std::time::Instant::now();
        stop(running).await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(hung.await.unwrap().is_err(), "hung request is cut off");
        assert!(!finished.load(Ordering::SeqCst));
    }
}
