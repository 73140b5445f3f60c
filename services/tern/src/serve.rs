//! Running roles: each part alone (`tern mailbox`, `tern smtp`), or every part in one process
//! (`tern dev`). Front-ends always reach the mailbox service through its gRPC API, also in one
//! process, so that `tern dev` exercises the same path as a cluster.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use tern_runtime::http::Readiness;
use tern_smtp::{
    backend::GrpcBackend,
    config::{ListenerKind, SmtpConfig},
};
use tokio::{net::TcpListener, sync::watch, task::JoinSet};

use crate::config::Config;

/// Which parts this process runs.
#[derive(Debug, Clone, Copy)]
pub struct Roles {
    pub mailbox: bool,
    pub smtp: bool,
    pub pop3: bool,
    pub imap: bool,
    pub managesieve: bool,
    pub relay: bool,
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} for {what}"))
}

/// The front-ends' certificate, from `[tls]` or the development one, served by one
/// configuration whose resolver answers the newest pair found in the files.
fn tls(
    config: &Config,
) -> anyhow::Result<(tern_runtime::tls::CertPaths, Arc<tern_runtime::tls::ReloadingCert>, Arc<rustls::ServerConfig>)> {
    let paths = match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => tern_runtime::tls::CertPaths { cert: cert.clone(), key: key.clone() },
        _ => tern_runtime::tls::dev_certificate(
            &config.data_dir.join("tls"),
            &[config.smtp.hostname.clone(), "localhost".into(), "127.0.0.1".into()],
        )?,
    };
    let reloading = tern_runtime::tls::ReloadingCert::load(&paths)?;
    let server = reloading.server_config()?;
    Ok((paths, reloading, server))
}

/// Opens the body store of `[blobs]` (or `--blobs`) and checks that it takes a write, so a
/// wrong endpoint, bucket or key stops the start with a clear message.
async fn open_blobs(config: &Config) -> anyhow::Result<tern_mailbox::blobs::BlobStore> {
    let location = config.blobs.location(&config.data_dir).context("invalid [blobs] configuration")?;
    let blobs = tern_mailbox::blobs::BlobStore::open(&location)
        .with_context(|| format!("cannot open the body store {location}"))?;
    blobs.check().await.with_context(|| format!("cannot store message bodies in {location}"))?;
    Ok(blobs)
}

/// Whether a protocol has any listener.
fn listens(a: &[SocketAddr], b: &[SocketAddr], c: &[SocketAddr]) -> bool {
    !(a.is_empty() && b.is_empty() && c.is_empty())
}

/// Starts the HTTPS server of the discovery documents (`[discovery]`) when it has listeners.
/// `tern dev`'s default listener is a convenience: when its port is taken (another `tern dev`)
/// or the documents would describe nothing, it is left off with a warning; configured
/// listeners fail the start instead.
async fn serve_discovery(
    config: &Config,
    dev: bool,
    tls: Arc<rustls::ServerConfig>,
    summary: &mut Vec<String>,
    tasks: &mut JoinSet<anyhow::Result<()>>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (addrs, default) = config.discovery.listeners(dev);
    if addrs.is_empty() {
        return Ok(());
    }
    let label = "discovery (HTTPS)";
    let endpoints = match config.discovery_endpoints() {
        Ok(endpoints) => endpoints,
        Err(e) if default => {
            tracing::warn!(error = %format!("{e:#}"), "the discovery documents are not served");
            summary.push(format!("  {label:<18} off ({e:#})"));
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let mut listeners = Vec::new();
    for addr in addrs {
        match TcpListener::bind(addr).await {
            Ok(socket) => {
                summary.push(format!(
                    "  {label:<18} {}   (autoconfig, Autodiscover, Apple profile, MTA-STS policy)",
                    socket.local_addr()?
                ));
                listeners.push(tern_discovery::server::Listener {
                    kind: (),
                    socket,
                    proxy_protocol: config.discovery.proxy_protocol,
                });
            }
            Err(e) if default => {
                tracing::warn!(%addr, error = %e, "the discovery documents are not served; set --discovery-listen");
                summary.push(format!("  {label:<18} off (cannot listen on {addr}: {e}; set --discovery-listen)"));
            }
            Err(e) => return Err(e).with_context(|| format!("cannot listen on {addr} for the discovery documents")),
        }
    }
    if listeners.is_empty() {
        return Ok(());
    }
    let limits = tern_discovery::server::Limits {
        max_connections_per_ip: config.discovery.max_connections_per_ip.max(1),
        shutdown_grace: Duration::from_secs(5),
    };
    let rx = stop.clone();
    tasks.spawn(async move {
        tern_discovery::server::serve(endpoints, tls, listeners, limits, rx).await;
        anyhow::Ok(())
    });
    Ok(())
}

/// Runs the chosen roles until SIGTERM or Ctrl-C, then shuts down gracefully: readiness goes
/// false, listeners stop accepting, sessions finish or are told to come back later.
pub async fn run(config: Config, roles: Roles, dev: bool) -> anyhow::Result<()> {
    // Before anything listens: from here on a SIGTERM is a graceful shutdown.
    let signal = tern_runtime::shutdown::signal();
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop = {
        let rx = stop_rx.clone();
        move || {
            let mut rx = rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        }
    };
    let readiness = Readiness::default();
    let mut tasks = JoinSet::new();
    let mut summary = Vec::new();

    let http = bind(config.listen.http, "metrics and health").await?;
    summary.push(format!("  metrics, health    http://{}/metrics  /healthz  /readyz", http.local_addr()?));
    tasks.spawn({
        let (stop, readiness) = (stop(), readiness.clone());
        async move { tern_runtime::http::serve(http, readiness, stop).await.context("HTTP server failed") }
    });

    let mut mailbox_url = config.mailbox_url.clone();
    // When this process serves the mailbox API, its own front-ends, relay and learner call it
    // in process: the same service, with no socket or HTTP/2 framing in between.
    let mut local = None;
    if roles.mailbox {
        let blobs = open_blobs(&config).await?;
        let bodies = format!("  message bodies     {}", blobs.location());
        let service = match config.store.nats()? {
            Some(nats) => {
                let servers = nats.display_servers();
                summary.push(format!("  metadata           NATS JetStream {servers} (prefix {})", config.store.prefix));
                let (prefix, replicas) = (&config.store.prefix, config.store.replicas);
                tern_mailbox::server::open_nats_with(&nats, prefix, replicas, blobs, config.mailbox_limits())
                    .await
                    .with_context(|| format!("cannot open the metadata store at {servers}"))?
            }
            None => tern_mailbox::server::open_embedded_with_blobs(&config.data_dir, blobs, config.mailbox_limits())
                .with_context(|| format!("cannot open the data directory {}", config.data_dir.display()))?,
        };
        let protection = tern_mailbox::server::Protection {
            tls: match &config.internal_tls {
                Some(t) => Some(t.to_runtime().server_config().context("[internal_tls]")?),
                None => None,
            },
            admin_token: config.admin.token()?,
        };
        let grpc = bind(config.listen.grpc, "the mailbox gRPC API").await?;
        let addr = grpc.local_addr()?;
        if protection.admin_token.is_none() && !addr.ip().is_loopback() && !dev {
            tracing::warn!(%addr, "the Admin API needs no token: set [admin] token_file or TERN_ADMIN_TOKEN");
        }
        let scheme = if protection.tls.is_some() { "https" } else { "http" };
        mailbox_url = format!("{scheme}://{addr}");
        summary.push(format!("  mailbox gRPC API   {addr}   (tern admin --server {mailbox_url})"));
        summary.push(bodies);
        local = Some(tern_mailbox::server::local_service(service.clone(), protection.admin_token.clone()));
        let stop = stop();
        tasks.spawn(async move {
            tern_mailbox::server::serve_protected(service, grpc, protection, stop).await.context("gRPC server failed")
        });
    }

    // Only the front-ends speak TLS to clients; the mailbox role alone needs no certificate.
    let tls = if roles.smtp || roles.pop3 || roles.imap || roles.managesieve {
        let (paths, reloading, tls) = tls(&config)?;
        let every = config.tls.reload_interval_secs;
        if every > 0 {
            summary.push(format!("  TLS certificate    {}   (read again every {every} s)", paths.cert.display()));
            let stop = stop();
            tasks.spawn(async move {
                reloading.watch(Duration::from_secs(every), stop).await;
                anyhow::Ok(())
            });
        } else {
            summary.push(format!("  TLS certificate    {}", paths.cert.display()));
        }
        Some(tls)
    } else {
        None
    };
    let options = config.client_options(&mailbox_url);
    let channel = match local {
        Some(service) => tern_runtime::rpc::local(service, &options),
        None => tern_runtime::rpc::connect(&options),
    }
    .with_context(|| format!("invalid mailbox URL {mailbox_url:?}"))?;

    let smtp_on = roles.smtp && listens(&config.smtp.mx, &config.smtp.submission, &config.smtp.submissions);
    let pop3_on = roles.pop3 && listens(&config.pop3.pop3, &config.pop3.pop3s, &[]);
    let imap_on = roles.imap && listens(&config.imap.imap, &config.imap.imaps, &[]);
    let managesieve_on = roles.managesieve && listens(&config.managesieve.managesieve, &[], &[]);
    for (asked, on, what, keys) in [
        (roles.smtp, smtp_on, "SMTP", "[smtp] mx, submission and submissions"),
        (roles.pop3, pop3_on, "POP3", "[pop3] pop3 and pop3s"),
        (roles.imap, imap_on, "IMAP", "[imap] imap and imaps"),
        (roles.managesieve, managesieve_on, "ManageSieve", "[managesieve] managesieve"),
    ] {
        if asked && !on {
            // In `tern dev` an empty list turns a protocol off; a process that runs only that
            // protocol would have nothing to do, which is a mistake worth stopping for.
            if !dev {
                anyhow::bail!("nothing to serve: {keys} are all empty");
            }
            summary.push(format!("  {what:<18} off (no listener configured)"));
        }
    }
    if smtp_on {
        let tls = tls.clone().context("TLS configuration")?;
        let channel = channel.clone();
        let backend = Arc::new(GrpcBackend::new(channel));
        let s = &config.smtp;
        let spam = config.spam.filter()?;
        if let Some(f) = spam.clone().filter(|f| f.on_failure == tern_smtp::spam::FailurePolicy::Tempfail) {
            // Without rspamd every message would be deferred: the front-end is not ready, so
            // that traffic goes to replicas (or, for an MX, other MXs) that can take it.
            let dependency = readiness.dependency("rspamd");
            let stop = stop();
            tasks.spawn(async move {
                tokio::pin!(stop);
                loop {
                    dependency.set(f.client.ping().await);
                    tokio::select! {
                        _ = &mut stop => break,
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    }
                }
                anyhow::Ok(())
            });
        }
        let dnsbl = s.dnsbl()?;
        // The connection-time families exist from the start (zero for every zone), so that
        // dashboards show 0 rather than no data.
        tern_smtp::screen::ScreenMetrics::declare(dnsbl.as_ref().map(|d| d.zones()).unwrap_or_default());
        if dnsbl.is_some() {
            let zones: Vec<String> = s.dnsbl.iter().map(|z| z.zone.clone()).collect();
            summary.push(format!("  {:<18} {}", "DNS blocklists", zones.join(", ")));
        }
        if let Some(f) = &spam {
            tern_smtp::spam::SpamMetrics::declare(f.on_failure);
            summary.push(format!(
                "  {:<18} rspamd at {} (when it is unavailable: {})",
                "spam filter",
                f.client.options().url,
                f.on_failure.as_str()
            ));
        }
        let smtp_config = Arc::new(SmtpConfig {
            hostname: s.hostname.clone(),
            limits: s.limits(dev),
            tls: Some(tls),
            allow_plaintext_auth: s.allow_plaintext_auth,
            verifier: if s.verify_inbound.unwrap_or(!dev) {
                Some(Arc::new(tern_smtp::verify::Verifier::new(s.dns_server).context("SPF/DKIM/DMARC verifier")?))
            } else {
                None
            },
            spam: spam.map(Arc::new),
            dnsbl: dnsbl.map(Arc::new),
        });
        let mut listeners = Vec::new();
        for (kind, addrs, label, what) in [
            (ListenerKind::Mx, &s.mx, "SMTP (MX)", "MX: mail from other servers, no AUTH"),
            (ListenerKind::Submission, &s.submission, "submission", "STARTTLS, then AUTH"),
            (ListenerKind::Submissions, &s.submissions, "submissions", "implicit TLS, then AUTH"),
        ] {
            for addr in addrs {
                let socket = bind(*addr, label).await?;
                summary.push(format!("  {label:<18} {}   ({what})", socket.local_addr()?));
                listeners.push(tern_smtp::server::Listener { kind, socket, proxy_protocol: s.proxy_protocol });
            }
        }
        let grace = Duration::from_secs(s.shutdown_grace_secs);
        let rx = stop_rx.clone();
        tasks.spawn(async move {
            tern_smtp::server::serve(smtp_config, backend, listeners, rx, grace).await;
            anyhow::Ok(())
        });
    }
    if pop3_on {
        let p = &config.pop3;
        let pop3_config = Arc::new(tern_pop3::config::Pop3Config {
            hostname: config.smtp.hostname.clone(),
            limits: p.limits(),
            tls: tls.clone(),
            allow_plaintext_auth: p.allow_plaintext_auth,
            login_delay: p.login_delay_secs,
            expire_days: p.expire_days,
            instance: format!("{}-{}", config.smtp.hostname, std::process::id()),
        });
        let mut listeners = Vec::new();
        for (kind, addrs, label, what) in [
            (tern_pop3::config::ListenerKind::Pop3, &p.pop3, "POP3", "STLS, then USER/PASS or AUTH"),
            (tern_pop3::config::ListenerKind::Pop3s, &p.pop3s, "POP3S", "implicit TLS"),
        ] {
            for addr in addrs {
                let socket = bind(*addr, label).await?;
                summary.push(format!("  {label:<18} {}   ({what})", socket.local_addr()?));
                listeners.push(tern_pop3::server::Listener { kind, socket, proxy_protocol: p.proxy_protocol });
            }
        }
        let backend = tern_pop3::backend::Backend::new(channel.clone());
        let grace = Duration::from_secs(p.shutdown_grace_secs);
        let rx = stop_rx.clone();
        tasks.spawn(async move {
            tern_pop3::server::serve(pop3_config, backend, listeners, rx, grace).await;
            anyhow::Ok(())
        });
    }
    if imap_on {
        let i = &config.imap;
        let imap_config = Arc::new(tern_imap::config::ImapConfig {
            hostname: config.smtp.hostname.clone(),
            limits: i.limits(),
            tls: tls.clone(),
            allow_plaintext_auth: i.allow_plaintext_auth,
        });
        let mut listeners = Vec::new();
        for (kind, addrs, label, what) in [
            (tern_imap::config::ListenerKind::Imap, &i.imap, "IMAP", "STARTTLS, then LOGIN or AUTHENTICATE"),
            (tern_imap::config::ListenerKind::Imaps, &i.imaps, "IMAPS", "implicit TLS"),
        ] {
            for addr in addrs {
                let socket = bind(*addr, label).await?;
                summary.push(format!("  {label:<18} {}   ({what})", socket.local_addr()?));
                listeners.push(tern_imap::server::Listener { kind, socket, proxy_protocol: i.proxy_protocol });
            }
        }
        let grace = Duration::from_secs(i.shutdown_grace_secs);
        let (rx, channel) = (stop_rx.clone(), channel.clone());
        tasks.spawn(async move {
            tern_imap::server::serve(imap_config, channel, listeners, rx, grace).await;
            anyhow::Ok(())
        });
    }
    if managesieve_on {
        let m = &config.managesieve;
        let managesieve_config = Arc::new(tern_managesieve::config::ManageSieveConfig {
            limits: m.limits(&config.limits),
            tls: tls.clone(),
            allow_plaintext_auth: m.allow_plaintext_auth,
        });
        let mut listeners = Vec::new();
        for addr in &m.managesieve {
            let socket = bind(*addr, "ManageSieve").await?;
            summary.push(format!("  {:<18} {}   (STARTTLS, then AUTHENTICATE)", "ManageSieve", socket.local_addr()?));
            listeners.push(tern_managesieve::server::Listener {
                kind: tern_managesieve::config::ListenerKind::ManageSieve,
                socket,
                proxy_protocol: m.proxy_protocol,
            });
        }
        let backend = Arc::new(tern_managesieve::backend::grpc::GrpcBackend::new(channel.clone()));
        let grace = Duration::from_secs(m.shutdown_grace_secs);
        let rx = stop_rx.clone();
        tasks.spawn(async move {
            tern_managesieve::server::serve(managesieve_config, backend, listeners, rx, grace).await;
            anyhow::Ok(())
        });
    }
    if roles.smtp || roles.pop3 || roles.imap || roles.managesieve {
        serve_discovery(&config, dev, tls.clone().context("TLS configuration")?, &mut summary, &mut tasks, &stop_rx)
            .await?;
    }
    if roles.relay {
        let mut relay_config = config.relay.clone();
        if relay_config.hostname == tern_relay::RelayConfig::default().hostname {
            relay_config.hostname = config.smtp.hostname.clone();
        }
        // Leases carry the worker's name: the pod's (HOSTNAME in Kubernetes) and the process's.
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| relay_config.hostname.clone());
        let holder = format!("{host}-{}", std::process::id());
        summary.push(format!(
            "  relay              {} deliveries at once to port {} (worker {holder})",
            relay_config.concurrency, relay_config.port
        ));
        let grace = Duration::from_secs(config.relay_shutdown_grace_secs());
        let mut relay = tern_relay::Relay::new(channel.clone(), relay_config, holder).context("relay")?;
        if !config.spam.controller_url.is_empty() {
            let client = config.spam.client(true)?.context("the rspamd client")?;
            summary.push(format!(
                "  spam learning      moves into and out of Junk, taught to {}",
                config.spam.controller_url
            ));
            relay = relay.with_learner(client);
        }
        let stop = stop();
        tasks.spawn(async move {
            relay.run(stop, grace).await;
            anyhow::Ok(())
        });
    }
    readiness.set(true);

    if dev {
        println!("tern dev is running (data in {})", config.data_dir.display());
        for line in &summary {
            println!("{line}");
        }
        println!("Press Ctrl-C to stop.");
    }
    tracing::info!(parts = ?roles, "started");

    tokio::select! {
        () = signal => {}
        Some(res) = tasks.join_next() => {
            // A server ending on its own is a failure: report it and stop the rest.
            res.context("server task panicked")??;
            readiness.set(false);
            stop_tx.send_replace(true);
            while let Some(res) = tasks.join_next().await {
                res.context("server task panicked")??;
            }
            anyhow::bail!("a server stopped by itself; see the log above");
        }
    }
    readiness.set(false);
    stop_tx.send_replace(true);
    while let Some(res) = tasks.join_next().await {
        res.context("server task panicked")??;
    }
    tracing::info!("stopped");
    Ok(())
}
