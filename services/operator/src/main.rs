//! `tern-operator`: the Kubernetes operator of Tern, a binary of its own so that kube is not
//! in every build of `tern`.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use tern_operator::admin::GrpcAdmin;
use tern_operator::controller::{self, Context};
use tern_operator::leader::{ElectionConfig, Elector};
use tern_operator::watch::{Health, SecretScope};

#[derive(Debug, Parser)]
#[command(name = "tern-operator", about = "Converges Tern's mailbox service to Domain and Mailbox resources")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the controllers, with the in-cluster or kubeconfig credentials.
    Run {
        /// The mailbox service's gRPC endpoint (https:// with internal TLS). A name with several
        /// addresses (a headless Service) is balanced over all of them.
        #[arg(long, env = "TERN_MAILBOX_ENDPOINT", default_value = "http://tern-mailbox:7000")]
        mailbox: String,
        /// The Admin API's token (sent as a bearer token).
        #[arg(long, env = "TERN_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        /// Internal mutual TLS: the CA, and this client's certificate and key (PEM files).
        #[arg(long, env = "TERN_INTERNAL_CA", requires_all = ["internal_cert", "internal_key"])]
        internal_ca: Option<PathBuf>,
        #[arg(long, env = "TERN_INTERNAL_CERT")]
        internal_cert: Option<PathBuf>,
        #[arg(long, env = "TERN_INTERNAL_KEY")]
        internal_key: Option<PathBuf>,
        /// This replica's name in Events (the pod name).
        #[arg(long, env = "POD_NAME")]
        instance: Option<String>,
        /// Where `/metrics`, `/healthz` and `/readyz` are served.
        #[arg(long, env = "TERN_OPERATOR_HTTP", default_value = "0.0.0.0:9090")]
        http: std::net::SocketAddr,
        /// OTLP endpoint to export traces to.
        #[arg(long, env = "TERN_OTLP_ENDPOINT")]
        otlp: Option<String>,
        /// The Lease (in the operator's namespace) that elects the one replica that
        /// reconciles; the others wait to take over.
        #[arg(long, env = "TERN_OPERATOR_LEASE", default_value = "tern-operator")]
        lease_name: String,
        /// Reconcile without leader election: only when exactly one replica runs.
        #[arg(long)]
        no_leader_election: bool,
        /// A namespace whose Secrets (Mailbox passwords, Domain DKIM keys) the operator may
        /// read and create, and whose ConfigMaps (Mailbox Sieve scripts) it may read; repeat it,
        /// or give a comma-separated list in the environment. Secrets and ConfigMaps are then
        /// watched in these namespaces only, and Domains and Mailboxes elsewhere are
        /// not reconciled (Ready False, reason SecretNamespaceNotWatched). None: every
        /// namespace (the operator needs Secrets cluster-wide).
        #[arg(long = "secret-namespace", env = "TERN_OPERATOR_SECRET_NAMESPACES", value_delimiter = ',')]
        secret_namespaces: Vec<String>,
        #[command(flatten)]
        dns: DnsArgs,
    },
    /// Writes the CustomResourceDefinitions into each directory given (`cargo xtask codegen`
    /// does this for `crds/` and `charts/tern/files/crds/`).
    Crds {
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
    },
}

/// What the Domains' DNS records publish besides their mail host (`status.dnsRecords`): the
/// ports of the SRV records, the discovery CNAMEs, the MTA-STS policy the front-ends serve
/// (the same settings as their `[discovery]` section) and the TLS reports' address.
#[derive(Debug, clap::Args)]
struct DnsArgs {
    /// The public port of SMTP submission with STARTTLS, for `_submission._tcp` (0: not offered).
    #[arg(long, env = "TERN_OPERATOR_SUBMISSION_PORT", default_value_t = 587)]
    submission_port: u16,
    /// ... with implicit TLS, for `_submissions._tcp`.
    #[arg(long, env = "TERN_OPERATOR_SUBMISSIONS_PORT", default_value_t = 465)]
    submissions_port: u16,
    /// IMAP with STARTTLS, for `_imap._tcp`.
    #[arg(long, env = "TERN_OPERATOR_IMAP_PORT", default_value_t = 143)]
    imap_port: u16,
    /// IMAP with implicit TLS, for `_imaps._tcp`.
    #[arg(long, env = "TERN_OPERATOR_IMAPS_PORT", default_value_t = 993)]
    imaps_port: u16,
    /// POP3 with STLS, for `_pop3._tcp`.
    #[arg(long, env = "TERN_OPERATOR_POP3_PORT", default_value_t = 110)]
    pop3_port: u16,
    /// POP3 with implicit TLS, for `_pop3s._tcp`.
    #[arg(long, env = "TERN_OPERATOR_POP3S_PORT", default_value_t = 995)]
    pop3s_port: u16,
    /// Whether the front-ends serve the discovery documents on the mail host's port 443:
    /// then `autoconfig.` and `autodiscover.` of each domain are CNAMEs to it.
    #[arg(long, env = "TERN_OPERATOR_DISCOVERY", default_value_t = true, action = clap::ArgAction::Set)]
    discovery: bool,
    /// The MX host patterns of the MTA-STS policy the front-ends serve ([discovery]
    /// mta_sts_mx; repeatable, or comma-separated). None: no MTA-STS records, since the
    /// policy's id could not be known.
    #[arg(long = "mta-sts-mx", env = "TERN_OPERATOR_MTA_STS_MX", value_delimiter = ',')]
    mta_sts_mx: Vec<String>,
    /// The policy's mode ([discovery] mta_sts_mode): enforce, testing or none.
    #[arg(long, env = "TERN_OPERATOR_MTA_STS_MODE", default_value = "testing")]
    mta_sts_mode: String,
    /// The policy's max_age in seconds ([discovery] mta_sts_max_age).
    #[arg(long, env = "TERN_OPERATOR_MTA_STS_MAX_AGE", default_value_t = 604_800)]
    mta_sts_max_age: u64,
    /// Where TLS reports go (`_smtp._tls` TXT); default: postmaster@ of each domain.
    #[arg(long, env = "TERN_OPERATOR_TLS_RPT_ADDRESS")]
    tls_rpt_address: Option<String>,
}

impl DnsArgs {
    fn settings(self) -> anyhow::Result<tern_operator::reconcile::DnsSettings> {
        let mta_sts = if self.mta_sts_mx.is_empty() {
            None
        } else {
            let mode = self.mta_sts_mode.parse().map_err(|e| anyhow::anyhow!("--mta-sts-mode: {e}"))?;
            let mx = self.mta_sts_mx.iter().map(|m| m.trim().to_ascii_lowercase()).filter(|m| !m.is_empty()).collect();
            let policy = tern_discovery::MtaSts { mode, mx, max_age: self.mta_sts_max_age };
            policy.check().map_err(|e| anyhow::anyhow!("the MTA-STS policy (--mta-sts-*): {e}"))?;
            Some(policy)
        };
        if let Some(address) = &self.tls_rpt_address
            && tern_discovery::Address::parse(address).is_err()
        {
            anyhow::bail!("--tls-rpt-address {address:?} is not an e-mail address");
        }
        Ok(tern_operator::reconcile::DnsSettings {
            ports: tern_operator::reconcile::ClientPorts {
                submission: self.submission_port,
                submissions: self.submissions_port,
                imap: self.imap_port,
                imaps: self.imaps_port,
                pop3: self.pop3_port,
                pop3s: self.pop3s_port,
            },
            discovery: self.discovery,
            mta_sts,
            tls_rpt_address: self.tls_rpt_address,
        })
    }
}

/// How long the controllers get to finish after SIGTERM, well inside a pod's default
/// termination grace period of 30 seconds.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crds { dirs } => {
            for dir in dirs {
                tern_operator::crd::write_crds(&dir)?;
            }
        }
        Command::Run {
            mailbox,
            admin_token,
            internal_ca,
            internal_cert,
            internal_key,
            instance,
            http,
            otlp,
            lease_name,
            no_leader_election,
            secret_namespaces,
            dns,
        } => {
            // Before anything else, so that a mistake in the flags stops the start at once.
            let dns = dns.settings()?;
            tern_runtime::tls::install_crypto_provider();
            let _telemetry = tern_runtime::telemetry::init("tern-operator", otlp.as_deref())?;
            // Every family on /metrics from the start, before (or without) the API server.
            controller::reconciles();
            tern_operator::watch::watch_errors();
            let secret_scope = SecretScope::from_namespaces(&secret_namespaces);
            let readiness = tern_runtime::http::Readiness::default();
            let health = Health::with_readiness(readiness.clone());
            let listener = tokio::net::TcpListener::bind(http).await?;
            let endpoint =
                tokio::spawn(tern_runtime::http::serve(listener, readiness.clone(), tern_runtime::shutdown::signal()));
            let client = kube::Client::try_default().await?;
            let mut options = tern_runtime::rpc::ClientOptions::new(mailbox.clone());
            options.token = admin_token;
            options.timeout = Some(std::time::Duration::from_secs(30));
            options.read_only = tern_proto::read_only;
            if let (Some(ca_file), Some(cert_file), Some(key_file)) = (internal_ca, internal_cert, internal_key) {
                options.tls = Some(tern_runtime::rpc::InternalTls { ca_file, cert_file, key_file, server_name: None });
            }
            let admin = Arc::new(GrpcAdmin::connect(&options)?);
            // Installed before waiting for the Lease: a SIGTERM while following is a clean exit.
            let stop = tern_runtime::shutdown::signal();
            tokio::pin!(stop);
            // Ready while following too, so that a rolling update can proceed.
            readiness.set(true);
            tracing::info!(%mailbox, %http, secrets = %secret_scope.describe(), "tern-operator started");
            let identity = instance.clone().unwrap_or_else(|| format!("tern-operator-{}", std::process::id()));
            let elector = (!no_leader_election).then(|| {
                let mut cfg = ElectionConfig::new(identity);
                cfg.lease_name = lease_name;
                Elector::new(Api::<Lease>::default_namespaced(client.clone()), cfg)
            });
            if let Some(elector) = &elector {
                tokio::select! {
                    () = elector.acquire() => {}
                    () = &mut stop => {
                        endpoint.abort();
                        return Ok(());
                    }
                }
            }
            let ctx = Arc::new(
                Context::new(client, admin, instance).with_secret_scope(secret_scope).with_health(health).with_dns(dns),
            );
            // kube's controllers stop on the same signal and finish the reconciles in flight;
            // the grace bounds that, since a watch waiting in its backoff (an API server that
            // does not answer) was seen to hold the process until the kubelet's SIGKILL.
            let run = async {
                let run = controller::run(ctx);
                tokio::pin!(run);
                tokio::select! {
                    () = &mut run => {}
                    () = &mut stop => {
                        if tokio::time::timeout(STOP_GRACE, run).await.is_err() {
                            tracing::warn!(grace = ?STOP_GRACE, "controllers did not stop in time; exiting");
                        }
                    }
                }
            };
            let result = match &elector {
                None => {
                    run.await;
                    Ok(())
                }
                Some(elector) => {
                    let outcome = tokio::select! {
                        () = run => Ok(()),
                        lost = elector.keep() => Err(lost),
                    };
                    if outcome.is_ok() {
                        elector.release().await;
                    }
                    outcome
                }
            };
            endpoint.abort();
            // Leadership lost: exit with an error, and Kubernetes restarts this replica as a
            // follower, with none of the old leader's work in flight.
            result?;
        }
    }
    Ok(())
}
