//! Production NATS: every way of proving who the worker is, against a real nats-server
//! configured for it (user/password, token, nkey, a `.creds` file on an operator-mode server
//! with JWTs the test mints), TLS with a private CA and mutual TLS. Each worker answers an event
//! through its authenticated connection; a wrong password and an untrusted CA are start-up
//! errors that say so. No secret is ever in the worker's output (logged at debug level, the
//! NATS client's too), `/metrics` or `/readyz`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use system_tests::deploy_env::helm_service_bin;
use system_tests::env::TestEnv;
use system_tests::events::{publish, triggered};
use system_tests::worker_process::{http_get, WorkerProcess};
use test_harness::operator::OperatorMode;
use test_harness::pki::TestPki;
use test_harness::process::ChildProcess;
use test_harness::{ClientOptions, NatsServer, ServerConfig};

const PROBE_WORKER: &str = env!("CARGO_BIN_EXE_probe-worker");

/// Written to a file of the test's dir; its path.
fn secret_file(env_dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = env_dir.join(name);
    std::fs::write(&path, format!("{content}\n")).expect("writing a secret file");
    path
}

/// A probe worker with `args`, logging at debug level (the NATS client's debug lines too),
/// ready to work.
async fn worker(env: &TestEnv, args: Vec<String>, name: &str) -> anyhow::Result<WorkerProcess> {
    let mut spec = env.worker(PROBE_WORKER);
    spec.extra_args = args;
    spec.env.push(("RUST_LOG".into(), "debug".into()));
    WorkerProcess::start(spec, env.dir.path(), name).await
}

/// One deployment event answered through the worker's connection.
async fn answers_an_event(env: &TestEnv, id: &str) -> anyhow::Result<()> {
    publish(
        &env.js,
        &triggered("deployment", id, ("sockshop", "dev", "carts"), &[]),
    )
    .await?;
    let replies = env
        .wait_replies(Duration::from_secs(30), |r| {
            !r.of(id, "finished").is_empty()
        })
        .await?;
    assert_eq!(replies.of(id, "finished")[0]["data"]["status"], "succeeded");
    Ok(())
}

/// The worker's log, `/metrics` and `/readyz` never show `secret`.
async fn never_shown(worker: &WorkerProcess, secret: &str) -> anyhow::Result<()> {
    let log = worker.process.log();
    assert!(
        log.contains("DEBUG"),
        "the worker logged at debug level:\n{log}"
    );
    assert!(!log.contains(secret), "the secret is in the worker's log");
    assert!(!worker.metrics().await?.contains(secret));
    let (_, ready) = http_get(worker.http_port, "/readyz").await?;
    assert!(!ready.contains(secret));
    Ok(())
}

/// Runs a worker that must fail at start-up: its exit status is failure, its output (which
/// must not hold `secret`) contains `expected`.
async fn fails_to_start(
    env: &TestEnv,
    args: Vec<String>,
    expected: &str,
    secret: &str,
) -> anyhow::Result<()> {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let name = format!("refused-{}", RUNS.fetch_add(1, Ordering::Relaxed));
    let mut process = ChildProcess::builder(PROBE_WORKER)
        .name(&name)
        .arg("run")
        .args(["--nats-url", &env.nats.url()])
        .args(["--http-addr", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "debug")
        .log_file(env.dir.path().join(format!("{name}.log")))
        .spawn()?;
    let status = process.wait_exit(Duration::from_secs(30)).await?;
    let log = process.log();
    assert!(!status.success(), "the worker must not start:\n{log}");
    assert!(log.contains(expected), "expected {expected:?} in:\n{log}");
    assert!(!log.contains(secret), "the secret is in the output:\n{log}");
    Ok(())
}

fn args(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| item.to_string()).collect()
}

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password_from_flags_env_and_url() -> anyhow::Result<()> {
    const PASSWORD: &str = "pw-4f1e9c0d-secret";
    let user =
        || async_nats::ConnectOptions::new().user_and_password("helm".into(), PASSWORD.into());
    let nats = NatsServer::start_configured(ServerConfig {
        extra: format!("authorization {{\n  user: helm\n  password: \"{PASSWORD}\"\n}}\n"),
        client: ClientOptions::new(user),
    })
    .await?;
    let env = TestEnv::with_server(nats).await?;
    let password = secret_file(env.dir.path(), "password", PASSWORD);

    let flags = worker(
        &env,
        args(&[
            "--nats-user",
            "helm",
            "--nats-password-file",
            &path_arg(&password),
        ]),
        "flags",
    )
    .await?;
    answers_an_event(&env, "5f1c6a2e-0000-4000-8000-0000000a0001").await?;
    never_shown(&flags, PASSWORD).await?;
    drop(flags);

    // The same from the environment, for `charts` (which connects and lists nothing).
    let output = tokio::process::Command::new(helm_service_bin())
        .args(["charts", "list", "--nats-url", &env.nats.url()])
        .env("NATS_USER", "helm")
        .env("NATS_PASSWORD_FILE", &password)
        .env("RUST_LOG", "debug")
        .kill_on_drop(true)
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "charts list: {stderr}");
    assert!(stderr.contains("no charts in the"), "{stderr}");

    // In the URL (the seed list carries them): works, and the URL is shown without them.
    let mut in_url = env.worker(PROBE_WORKER);
    in_url.nats_url = format!(
        "nats://helm:{PASSWORD}@127.0.0.1:{port},nats://helm:{PASSWORD}@127.0.0.1:{port}",
        port = env.nats.port()
    );
    in_url.env.push(("RUST_LOG".into(), "debug".into()));
    let in_url = WorkerProcess::start(in_url, env.dir.path(), "in-url").await?;
    answers_an_event(&env, "5f1c6a2e-0000-4000-8000-0000000a0002").await?;
    never_shown(&in_url, PASSWORD).await?;
    assert!(in_url
        .process
        .log()
        .contains(&format!("nats://127.0.0.1:{}", env.nats.port())));
    drop(in_url);

    // The server's password changes under a running worker and its file does not: it cannot
    // reconnect, keeps trying, and /readyz says why (without the secret). (A replaced file is
    // read at the next attempt: `a_rotated_password_file_is_read_again_at_reconnection`.)
    let mut running = worker(
        &env,
        args(&[
            "--nats-user",
            "helm",
            "--nats-password-file",
            &path_arg(&password),
        ]),
        "rotated",
    )
    .await?;
    let mut env = env;
    const ROTATED: &str = "pw-rotated-20c4-secret";
    env.nats.reconfigure(ServerConfig {
        extra: format!("authorization {{\n  user: helm\n  password: \"{ROTATED}\"\n}}\n"),
        client: ClientOptions::new(|| {
            async_nats::ConnectOptions::new().user_and_password("helm".into(), ROTATED.into())
        }),
    })?;
    env.nats.restart().await?;
    let reason = test_harness::wait_until(
        "/readyz to name the refused credentials",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            match http_get(running.http_port, "/readyz").await {
                Ok((503, body)) if body.contains("authorization violation") => Some(body),
                _ => None,
            }
        },
    )
    .await?;
    assert!(
        reason.starts_with("not ready: not connected to NATS"),
        "{reason}"
    );
    assert!(running.process.is_running(), "it keeps trying");
    never_shown(&running, PASSWORD).await?;
    drop(running);
    env.nats.reconfigure(ServerConfig {
        extra: format!("authorization {{\n  user: helm\n  password: \"{PASSWORD}\"\n}}\n"),
        client: ClientOptions::new(user),
    })?;
    env.nats.restart().await?;

    // A wrong password: nothing can work, so the worker says so and stops.
    let wrong = secret_file(env.dir.path(), "wrong", "wrong-7d2a-secret");
    fails_to_start(
        &env,
        args(&[
            "--nats-user",
            "helm",
            "--nats-password-file",
            &path_arg(&wrong),
        ]),
        "refused the credentials",
        "wrong-7d2a-secret",
    )
    .await?;
    // A password file that cannot be read names the flag and the file.
    fails_to_start(
        &env,
        args(&[
            "--nats-user",
            "helm",
            "--nats-password-file",
            "/nonexistent/password",
        ]),
        "cannot read --nats-password-file /nonexistent/password",
        PASSWORD,
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_and_nkey() -> anyhow::Result<()> {
    const TOKEN: &str = "token-9b3c51e2-secret";
    let nats = NatsServer::start_configured(ServerConfig {
        extra: format!("authorization {{\n  token: \"{TOKEN}\"\n}}\n"),
        client: ClientOptions::new(|| async_nats::ConnectOptions::new().token(TOKEN.into())),
    })
    .await?;
    let env = TestEnv::with_server(nats).await?;
    let token = secret_file(env.dir.path(), "token", TOKEN);
    let worker_process = worker(
        &env,
        args(&["--nats-token-file", &path_arg(&token)]),
        "token",
    )
    .await?;
    answers_an_event(&env, "5f1c6a2e-0000-4000-8000-0000000b0001").await?;
    never_shown(&worker_process, TOKEN).await?;
    drop(worker_process);
    drop(env);

    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().map_err(|err| anyhow::anyhow!("{err}"))?;
    let client_seed = seed.clone();
    let nats = NatsServer::start_configured(ServerConfig {
        extra: format!(
            "authorization {{\n  users = [ {{ nkey: {} }} ]\n}}\n",
            user.public_key()
        ),
        client: ClientOptions::new(move || {
            async_nats::ConnectOptions::new().nkey(client_seed.clone())
        }),
    })
    .await?;
    let env = TestEnv::with_server(nats).await?;
    let seed_file = secret_file(env.dir.path(), "user.nk", &seed);
    let worker_process =
        worker(&env, args(&["--nats-nkey", &path_arg(&seed_file)]), "nkey").await?;
    answers_an_event(&env, "5f1c6a2e-0000-4000-8000-0000000b0002").await?;
    never_shown(&worker_process, &seed).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creds_file_on_an_operator_mode_server() -> anyhow::Result<()> {
    let operator = OperatorMode::mint()?;
    let nats = NatsServer::start_configured(operator.server("")).await?;
    let env = TestEnv::with_server(nats).await?;
    let creds = secret_file(env.dir.path(), "user.creds", &operator.user_creds);
    let worker_process = worker(&env, args(&["--nats-creds", &path_arg(&creds)]), "creds").await?;
    answers_an_event(&env, "5f1c6a2e-0000-4000-8000-0000000c0001").await?;
    never_shown(&worker_process, &operator.user_seed).await?;
    // Without the credentials the server refuses the worker.
    fails_to_start(
        &env,
        Vec::new(),
        "refused the credentials",
        &operator.user_seed,
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca_and_mutual_tls() -> anyhow::Result<()> {
    let pki = TestPki::generate("helm-service-test-ca")?;
    let other = TestPki::generate("someone-else")?;
    let ca = pki.ca();
    let nats = NatsServer::start_configured(ServerConfig {
        extra: pki.server_tls_block(false),
        client: ClientOptions::new(move || {
            async_nats::ConnectOptions::new().add_root_certificates(ca.clone())
        }),
    })
    .await?;
    let env = TestEnv::with_server(nats).await?;
    let worker_process = worker(&env, args(&["--nats-ca", &path_arg(&pki.ca())]), "tls").await?;
    answers_an_event(&env, "5f1c6a2e-0000-4000-8000-0000000d0001").await?;
    drop(worker_process);
    // A CA that did not sign the server's certificate: a start-up error naming TLS.
    fails_to_start(
        &env,
        args(&["--nats-ca", &path_arg(&other.ca())]),
        "TLS with NATS at",
        "-----BEGIN",
    )
    .await?;
    drop(env);

    // Mutual TLS: the server asks for a certificate its CA signed.
    let (ca, cert, key) = (pki.ca(), pki.client_cert(), pki.client_key());
    let nats = NatsServer::start_configured(ServerConfig {
        extra: pki.server_tls_block(true),
        client: ClientOptions::new(move || {
            async_nats::ConnectOptions::new()
                .add_root_certificates(ca.clone())
                .add_client_certificate(cert.clone(), key.clone())
        }),
    })
    .await?;
    let env = TestEnv::with_server(nats).await?;
    let key_text = std::fs::read_to_string(pki.client_key())?;
    let key_body = key_text.lines().nth(1).expect("a PEM body line").to_owned();
    let worker_process = worker(
        &env,
        args(&[
            "--nats-ca",
            &path_arg(&pki.ca()),
            "--nats-cert",
            &path_arg(&pki.client_cert()),
            "--nats-key",
            &path_arg(&pki.client_key()),
        ]),
        "mtls",
    )
    .await?;
    answers_an_event(&env, "5f1c6a2e-0000-4000-8000-0000000d0002").await?;
    never_shown(&worker_process, &key_body).await?;
    // A key that is not the certificate's: refused before connecting.
    fails_to_start(
        &env,
        args(&[
            "--nats-ca",
            &path_arg(&pki.ca()),
            "--nats-cert",
            &path_arg(&pki.client_cert()),
            "--nats-key",
            &path_arg(&other.client_key()),
        ]),
        "--nats-cert and --nats-key cannot be used together",
        "-----BEGIN",
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn help_shows_no_secret_from_the_environment() -> anyhow::Result<()> {
    for subcommand in ["run", "send", "charts"] {
        let output = tokio::process::Command::new(helm_service_bin())
            .args([subcommand, "--help"])
            .env("NATS_URL", "nats://helm:help-5e1a-secret@nats:4222")
            .env("NATS_USER", "helm")
            .env("RESOURCE_SERVICE_URL", "http://u:help-5e1a-secret@rs:8080")
            .kill_on_drop(true)
            .output()
            .await?;
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{subcommand} --help");
        assert!(help.contains("--nats-url"), "{subcommand}: {help}");
        assert!(help.contains("--nats-creds"), "{subcommand}: {help}");
        assert!(!help.contains("help-5e1a-secret"), "{subcommand}: {help}");
    }
    Ok(())
}

/// The harness's own user on servers whose other users' credentials rotate: its connection
/// (publishing events, reading replies) must outlive the rotation.
const TEST_USER_PASSWORD: &str = "test-client-pw-0c1d";

/// A server with the harness's user and `helm_user` (an entry of `authorization.users`).
fn with_users(helm_user: &str) -> ServerConfig {
    ServerConfig {
        extra: format!(
            "authorization {{\n  users = [\n    {{ user: test, password: \"{TEST_USER_PASSWORD}\" }}\n    {helm_user}\n  ]\n}}\n"
        ),
        client: ClientOptions::new(|| {
            async_nats::ConnectOptions::new()
                .user_and_password("test".into(), TEST_USER_PASSWORD.into())
        }),
    }
}

/// Replaces `path` at once with `content`, as Kubernetes updates a mounted Secret (a new file
/// swapped in, never a half-written one).
fn replace_file(path: &Path, content: &str) -> anyhow::Result<()> {
    let next = path.with_extension("next");
    std::fs::write(&next, format!("{content}\n"))?;
    std::fs::rename(&next, path)?;
    Ok(())
}

const RELOAD_FAILURES: &str = "helm_service_nats_credential_reload_failures_total";

/// `/readyz` names refused credentials: the worker was disconnected and its attempts refused.
async fn refused(worker: &WorkerProcess) -> anyhow::Result<()> {
    test_harness::wait_until(
        "/readyz to name the refused credentials",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            match http_get(worker.http_port, "/readyz").await {
                Ok((503, body)) if body.contains("authorization violation") => Some(()),
                _ => None,
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_password_file_is_read_again_at_reconnection() -> anyhow::Result<()> {
    const OLD: &str = "pw-old-61a0-secret";
    const NEW: &str = "pw-new-93d7-secret";
    let helm = |password: &str| format!("{{ user: helm, password: \"{password}\" }}");
    let nats = NatsServer::start_configured(with_users(&helm(OLD))).await?;
    let mut env = TestEnv::with_server(nats).await?;
    let password = secret_file(env.dir.path(), "password", OLD);
    let running = worker(
        &env,
        args(&[
            "--nats-user",
            "helm",
            "--nats-password-file",
            &path_arg(&password),
        ]),
        "rotating-password",
    )
    .await?;
    answers_an_event(&env, "5f1c6a2e-0000-4000-8000-0000000e0001").await?;
    assert_eq!(running.metric(RELOAD_FAILURES).await?, 0.0);

    // Mid-rotation the file is gone, and the server's password changes (a reload, no
    // restart): the server closes the worker's connection. Each attempt to reconnect finds no
    // file, says so, counts it, and tries the last valid (old) password, which is refused.
    std::fs::remove_file(&password)?;
    env.nats.reload(with_users(&helm(NEW))).await?;
    refused(&running).await?;
    test_harness::wait_until(
        "the worker to count the unusable password file",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async { (running.metric(RELOAD_FAILURES).await.ok()? >= 1.0).then_some(()) },
    )
    .await?;
    let log = running.process.log();
    assert!(
        log.contains("cannot use the NATS credential files")
            && log.contains(&format!(
                "cannot read --nats-password-file {}",
                password.display()
            )),
        "{log}"
    );

    // The new password arrives: the next attempt reads it, and events flow again.
    replace_file(&password, NEW)?;
    answers_an_event(&env, "5f1c6a2e-0000-4000-8000-0000000e0002").await?;
    let mut running = running;
    assert!(running.process.is_running());
    assert!(running
        .process
        .log()
        .contains("NATS credential files changed; connecting with the new credentials"));
    never_shown(&running, OLD).await?;
    never_shown(&running, NEW).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_nkey_seed_file_is_read_again_at_reconnection() -> anyhow::Result<()> {
    let seed_of = |key: &nkeys::KeyPair| key.seed().map_err(|err| anyhow::anyhow!("{err}"));
    let helm = |key: &nkeys::KeyPair| format!("{{ nkey: {} }}", key.public_key());
    let (old, new) = (nkeys::KeyPair::new_user(), nkeys::KeyPair::new_user());
    let nats = NatsServer::start_configured(with_users(&helm(&old))).await?;
    let mut env = TestEnv::with_server(nats).await?;
    let seed_file = secret_file(env.dir.path(), "user.nk", &seed_of(&old)?);
    let running = worker(
        &env,
        args(&["--nats-nkey", &path_arg(&seed_file)]),
        "rotating-nkey",
    )
    .await?;
    answers_an_event(&env, "5f1c6a2e-0000-4000-8000-0000000e0101").await?;

    // The new seed is in place first, then the server trades the old user for the new one:
    // the worker's reconnection signs with the new seed.
    replace_file(&seed_file, &seed_of(&new)?)?;
    env.nats.reload(with_users(&helm(&new))).await?;
    test_harness::wait_until(
        "the worker to connect with the new seed",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            running
                .process
                .log()
                .contains("NATS credential files changed")
                .then_some(())
        },
    )
    .await?;
    answers_an_event(&env, "5f1c6a2e-0000-4000-8000-0000000e0102").await?;
    assert_eq!(running.metric(RELOAD_FAILURES).await?, 0.0);
    never_shown(&running, &seed_of(&old)?).await?;
    never_shown(&running, &seed_of(&new)?).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creds_file_is_read_again_when_its_user_jwt_expires() -> anyhow::Result<()> {
    // The harness connects as the operator's long-lived user, the worker as one whose JWT
    // expires soon (long enough to start and answer an event on a busy machine).
    const LIFETIME: Duration = Duration::from_secs(20);
    let operator = OperatorMode::mint()?;
    let nats = NatsServer::start_configured(operator.server("")).await?;
    let env = TestEnv::with_server(nats).await?;
    let expiring = operator.new_user("helm-service-expiring", Some(LIFETIME))?;
    let creds = secret_file(env.dir.path(), "user.creds", &expiring.creds);
    let running = worker(
        &env,
        args(&["--nats-creds", &path_arg(&creds)]),
        "rotating-creds",
    )
    .await?;
    answers_an_event(&env, "5f1c6a2e-0000-4000-8000-0000000e0201").await?;

    // Before the JWT expires the operator issues a new user and its file replaces the old
    // one; the connection in use stays until the server closes it at the expiry, and the
    // reconnection reads the new file.
    let next = operator.new_user("helm-service-next", None)?;
    replace_file(&creds, &next.creds)?;
    test_harness::wait_until(
        "the worker to reconnect with the new credentials after the expiry",
        LIFETIME + Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            running
                .process
                .log()
                .contains("NATS credential files changed")
                .then_some(())
        },
    )
    .await?;
    answers_an_event(&env, "5f1c6a2e-0000-4000-8000-0000000e0202").await?;
    assert_eq!(running.metric(RELOAD_FAILURES).await?, 0.0);
    never_shown(&running, &expiring.seed).await?;
    never_shown(&running, &next.seed).await?;
    Ok(())
}
