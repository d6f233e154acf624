//! The chart store backends against real counterparts: a nats-server with JetStream (object
//! store), a temp directory (local dir) and a small resource-service on loopback (HTTP).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use test_harness::nats::NatsServer;
use worker::charts::local_dir::LocalDirCharts;
use worker::charts::object_store::ObjectStoreCharts;
use worker::charts::resource_service::ResourceServiceCharts;
use worker::charts::{
    ArchiveLimits, Chart, ChartLocation, ChartStore, ChartStoreConfig, ChartStoreError,
    ChartStoreKind, ProjectName,
};

/// Every await in these tests is bounded.
const STEP: Duration = Duration::from_secs(30);

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what} did not finish within {STEP:?}"),
    }
}

const MAX: u64 = 64 * 1024;

fn location(project: &str, stage: &str, service: &str) -> ChartLocation {
    ChartLocation::new(project, stage, service).expect("valid names")
}

fn project(name: &str) -> ProjectName {
    ProjectName::new(name).expect("valid project name")
}

/// A small canonical chart archive; `replicas` makes different contents.
fn chart_archive(name: &str, replicas: u32) -> Vec<u8> {
    let mut files = BTreeMap::new();
    files.insert(
        "Chart.yaml".to_owned(),
        format!("apiVersion: v2\nname: {name}\nversion: 0.1.{replicas}\n").into_bytes(),
    );
    files.insert(
        "values.yaml".to_owned(),
        format!("replicaCount: {replicas}\n").into_bytes(),
    );
    files.insert(
        "templates/deployment.yaml".to_owned(),
        b"kind: Deployment\n".to_vec(),
    );
    Chart::from_files(name, files)
        .expect("valid chart")
        .to_archive()
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// What every backend must do the same way: absent → None, store → fetch returns the
/// bytes, store again replaces, names are checked.
async fn common_behaviour(store: &dyn ChartStore) {
    let carts = location("sockshop", "dev", "carts");
    assert!(
        within("fetch absent", store.fetch(&carts, None))
            .await
            .expect("fetch absent")
            .is_none(),
        "{}: nothing stored yet",
        store.describe()
    );
    let first = chart_archive("carts", 1);
    within("store", store.store(&carts, &first))
        .await
        .expect("store");
    let fetched = within("fetch", store.fetch(&carts, None))
        .await
        .expect("fetch")
        .expect("stored chart");
    assert_eq!(fetched.archive.as_ref(), first.as_slice());
    let chart = Chart::from_archive(&fetched.archive, &ArchiveLimits::default()).expect("chart");
    assert_eq!(chart.name(), "carts");

    let second = chart_archive("carts", 2);
    within("store again", store.store(&carts, &second))
        .await
        .expect("store again");
    let fetched = within("fetch again", store.fetch(&carts, None))
        .await
        .expect("fetch again")
        .expect("stored chart");
    assert_eq!(fetched.archive.as_ref(), second.as_slice());

    // Other stages and services are other charts.
    let prod = location("sockshop", "prod", "carts");
    assert!(within("fetch prod", store.fetch(&prod, None))
        .await
        .expect("fetch prod")
        .is_none());

    // A location or file with bad names cannot even be made, so no backend builds a path or
    // URL from one.
    let err = ChartLocation::new("..", "dev", "carts").expect_err("bad names are refused");
    assert!(matches!(err, ChartStoreError::Invalid { .. }), "{err:?}");
    let err = carts
        .file("helm/../../x")
        .expect_err("bad resource paths are refused");
    assert!(matches!(err, ChartStoreError::Invalid { .. }), "{err:?}");

    // Over the cap: refused when storing.
    let big = vec![0u8; MAX as usize + 1];
    let err = within("store big", store.store(&carts, &big))
        .await
        .expect_err("too large");
    assert!(matches!(err, ChartStoreError::TooLarge { .. }), "{err:?}");
    assert!(!err.is_transient());
}

// ---------------------------------------------------------------------------------------------
// JetStream object store

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_store_backend() -> anyhow::Result<()> {
    let mut nats = within("nats start", NatsServer::start()).await?;
    let js = within("connect", nats.jetstream()).await?;

    // Through the configuration, as the worker opens it: the bucket is created.
    let config = ChartStoreConfig {
        chart_store: ChartStoreKind::Nats,
        chart_bucket: "charts-test".into(),
        resource_service_url: "http://unused".into(),
        resource_service_token_file: None,
        resource_service_ca: None,
        charts_dir: None,
        use_commit_id: false,
        max_chart_bytes: MAX,
        max_chart_unpacked_bytes: MAX * 4,
    };
    let store = within("open", config.open(&js)).await?;
    assert_eq!(
        store.describe(),
        "JetStream object store bucket charts-test"
    );
    within("bucket exists", js.get_object_store("charts-test")).await?;
    // A second replica binds the existing bucket.
    let again = within(
        "open again",
        ObjectStoreCharts::open(&js, "charts-test", MAX),
    )
    .await?;

    common_behaviour(store.as_ref()).await;

    // Stored under exactly ChartLocation::object_name, visible to the other handle.
    let carts = location("sockshop", "dev", "carts");
    let bucket = within("bucket", js.get_object_store("charts-test")).await?;
    let info = within("info", bucket.info("sockshop/dev/carts/helm/carts.tgz")).await?;
    assert_eq!(info.size, chart_archive("carts", 2).len());
    assert!(within(
        "fetch via other handle",
        again.fetch(&carts, Some("ignored"))
    )
    .await?
    .is_some());

    // Other files of the service, and foreign objects in the bucket.
    let mut endpoints: &[u8] = b"deploymentURIsLocal: [\"http://carts:80\"]\n";
    within(
        "put endpoints",
        bucket.put("sockshop/dev/carts/helm/endpoints.yaml", &mut endpoints),
    )
    .await?;
    let file = within(
        "fetch_file",
        store.fetch_file(&carts.file("helm/endpoints.yaml").unwrap(), None),
    )
    .await?
    .expect("endpoints file");
    assert_eq!(
        file.as_ref(),
        b"deploymentURIsLocal: [\"http://carts:80\"]\n"
    );
    assert!(within(
        "fetch_file absent",
        store.fetch_file(&carts.file("helm/none.yaml").unwrap(), None)
    )
    .await?
    .is_none());
    let mut junk: &[u8] = b"junk";
    within("put junk", bucket.put("not-a-chart", &mut junk)).await?;

    // An object over the cap is refused from its info, before it is read.
    let orders = location("sockshop", "dev", "orders");
    let mut big: &[u8] = &vec![7u8; MAX as usize + 1];
    within(
        "put big",
        bucket.put(orders.object_name().as_str(), &mut big),
    )
    .await?;
    let err = within("fetch big", store.fetch(&orders, None))
        .await
        .expect_err("too large");
    assert!(
        matches!(err, ChartStoreError::TooLarge { size: Some(size), .. } if size == MAX + 1),
        "{err:?}"
    );

    // Listing: our charts only, sorted, with sizes and sha256 digests of the bytes.
    let other = location("other", "dev", "carts");
    within(
        "store other",
        store.store(&other, &chart_archive("carts", 3)),
    )
    .await?;
    let listings = within("list", store.list(None)).await?;
    let names: Vec<String> = listings.iter().map(|l| l.location.to_string()).collect();
    assert_eq!(
        names,
        [
            "other/dev/carts/helm/carts.tgz",
            "sockshop/dev/carts/helm/carts.tgz",
            "sockshop/dev/orders/helm/orders.tgz",
        ]
    );
    let carts_listing = &listings[1];
    let archive = chart_archive("carts", 2);
    assert_eq!(carts_listing.size, archive.len() as u64);
    assert_eq!(
        carts_listing.digest.as_deref(),
        Some(sha256(&archive).as_str())
    );
    let chart = Chart::from_archive(&archive, &ArchiveLimits::default())?;
    assert_eq!(
        carts_listing.digest.as_deref(),
        Some(chart.digest().as_str())
    );
    assert!(carts_listing.modified.is_some());
    let only_other = within("list other", store.list(Some(&project("other")))).await?;
    assert_eq!(only_other.len(), 1);
    assert_eq!(only_other[0].location, other);

    // NATS away: a transient error, not "no chart" (after async-nats' request timeout).
    within("kill nats", nats.kill()).await?;
    let err = within("fetch while down", store.fetch(&carts, None))
        .await
        .expect_err("NATS is down");
    assert!(err.is_transient(), "{err:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_store_refuses_a_bad_bucket_name() -> anyhow::Result<()> {
    let nats = within("nats start", NatsServer::start()).await?;
    let js = within("connect", nats.jetstream()).await?;
    let err = within("open", ObjectStoreCharts::open(&js, "bad.name", MAX))
        .await
        .err()
        .expect("bad bucket name");
    assert!(matches!(err, ChartStoreError::Config { .. }), "{err:?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Local directory

#[tokio::test]
async fn local_dir_backend() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("charts");
    let store = LocalDirCharts::new(&root, MAX);
    assert!(store.describe().contains("charts"));

    // Nothing there at all (not even the root): no charts, no error.
    assert!(within("list empty", store.list(None)).await?.is_empty());

    common_behaviour(&store).await;

    let carts = location("sockshop", "dev", "carts");
    let path = root.join("sockshop/dev/carts/helm/carts.tgz");
    assert_eq!(root.join(carts.object_name()), path);
    assert_eq!(std::fs::read(&path)?, chart_archive("carts", 2));
    // Written through a temp file and a rename: no leftovers.
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    assert_eq!(leftovers, ["carts.tgz"]);

    std::fs::write(
        root.join("sockshop/dev/carts/helm/endpoints.yaml"),
        b"deploymentURIsPublic: []\n",
    )?;
    let file = within(
        "fetch_file",
        store.fetch_file(&carts.file("helm/endpoints.yaml").unwrap(), None),
    )
    .await?
    .expect("endpoints");
    assert_eq!(file.as_ref(), b"deploymentURIsPublic: []\n");

    // Over the cap on disk: refused from the file size.
    let orders = location("sockshop", "dev", "orders");
    std::fs::create_dir_all(root.join("sockshop/dev/orders/helm"))?;
    std::fs::write(root.join(orders.object_name()), vec![0u8; MAX as usize + 1])?;
    let err = within("fetch big", store.fetch(&orders, None))
        .await
        .expect_err("too large");
    assert!(matches!(err, ChartStoreError::TooLarge { .. }), "{err:?}");
    std::fs::remove_file(root.join(orders.object_name()))?;

    // Links are not followed, wherever they are on the way.
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(outside.join("dev/carts/helm"))?;
    std::fs::write(
        outside.join("dev/carts/helm/carts.tgz"),
        chart_archive("carts", 9),
    )?;
    std::os::unix::fs::symlink(&outside, root.join("linked"))?;
    let linked = location("linked", "dev", "carts");
    let err = within("fetch through a link", store.fetch(&linked, None))
        .await
        .expect_err("link refused");
    assert!(matches!(err, ChartStoreError::Refused { .. }), "{err:?}");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    let err = within(
        "store through a link",
        store.store(&linked, &chart_archive("x", 1)),
    )
    .await
    .expect_err("link refused");
    assert!(matches!(err, ChartStoreError::Refused { .. }), "{err:?}");
    // The file behind the link is untouched.
    assert_eq!(
        std::fs::read(outside.join("dev/carts/helm/carts.tgz"))?,
        chart_archive("carts", 9)
    );
    std::os::unix::fs::symlink(
        "/etc/passwd",
        root.join("sockshop/dev/carts/helm/passwd.yaml"),
    )?;
    let err = within(
        "fetch_file link",
        store.fetch_file(&carts.file("helm/passwd.yaml").unwrap(), None),
    )
    .await
    .expect_err("link refused");
    assert!(matches!(err, ChartStoreError::Refused { .. }), "{err:?}");

    // Listing skips linked charts and foreign files.
    std::fs::write(root.join("README"), b"not a chart")?;
    std::fs::create_dir_all(root.join("Bad_Name/dev/carts/helm"))?;
    std::fs::write(
        root.join("Bad_Name/dev/carts/helm/carts.tgz"),
        chart_archive("carts", 1),
    )?;
    let other = location("other", "prod", "carts");
    within(
        "store other",
        store.store(&other, &chart_archive("carts", 3)),
    )
    .await?;
    let listings = within("list", store.list(None)).await?;
    let names: Vec<String> = listings.iter().map(|l| l.location.to_string()).collect();
    assert_eq!(
        names,
        [
            "other/prod/carts/helm/carts.tgz",
            "sockshop/dev/carts/helm/carts.tgz"
        ]
    );
    assert_eq!(
        listings[1].digest.as_deref(),
        Some(sha256(&chart_archive("carts", 2)).as_str())
    );
    assert!(listings[1].modified.is_some());
    let sockshop = within("list sockshop", store.list(Some(&project("sockshop")))).await?;
    assert_eq!(sockshop.len(), 1);
    assert!(within("list linked", store.list(Some(&project("linked"))))
        .await?
        .is_empty());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Resource-service

/// (project, stage, service, resource URI).
type ResourceKey = (String, String, String, String);

/// A resource-service double: every PUT makes a new commit; GET answers the newest version or
/// the one at `gitCommitID`.
#[derive(Default)]
struct FakeResourceService {
    /// Versions of each resource as (commit, base64 content), oldest first.
    resources: HashMap<ResourceKey, Vec<(String, String)>>,
    commits: u32,
    /// Query strings seen by GET, for checking what the client sent.
    queries: Vec<Option<String>>,
}

type Shared = Arc<Mutex<FakeResourceService>>;

fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn get_resource(
    State(state): State<Shared>,
    Path((project, stage, service, uri)): Path<(String, String, String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    if project == "broken" {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"code": 503, "message": "git is down"}),
        );
    }
    if project == "forbidden" {
        return json_response(
            StatusCode::FORBIDDEN,
            serde_json::json!({"code": 403, "message": "no access"}),
        );
    }
    if project == "huge" {
        // A body far over the cap, announced by Content-Length.
        return (StatusCode::OK, " ".repeat(4 * MAX as usize)).into_response();
    }
    if project == "endless" {
        // No Content-Length and no end: only a capped read finishes.
        let chunk = Bytes::from(vec![b' '; 1024]);
        let body = futures::stream::repeat(Ok::<_, std::convert::Infallible>(chunk));
        return (StatusCode::OK, axum::body::Body::from_stream(body)).into_response();
    }
    if project == "garbage" {
        return json_response(
            StatusCode::OK,
            serde_json::json!({"resourceURI": uri, "resourceContent": "!!! not base64 !!!"}),
        );
    }
    let mut state = state.lock().unwrap();
    state.queries.push(query.clone());
    let commit = query.as_deref().and_then(|query| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("gitCommitID="))
            .map(|value| {
                percent_encoding::percent_decode_str(value)
                    .decode_utf8_lossy()
                    .into_owned()
            })
    });
    let key = (project, stage, service, uri.clone());
    let version = state
        .resources
        .get(&key)
        .and_then(|versions| match &commit {
            Some(commit) => versions.iter().find(|(c, _)| c == commit),
            None => versions.last(),
        });
    match version {
        Some((commit, content)) => json_response(
            StatusCode::OK,
            serde_json::json!({
                "resourceURI": uri,
                "resourceContent": content,
                "metadata": {"branch": "dev", "upstreamURL": "", "version": commit}
            }),
        ),
        None => json_response(
            StatusCode::NOT_FOUND,
            serde_json::json!({"code": 404, "message": "Could not find resource"}),
        ),
    }
}

async fn put_resources(
    State(state): State<Shared>,
    Path((project, stage, service)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let Ok(request) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return json_response(StatusCode::BAD_REQUEST, serde_json::json!({"code": 400}));
    };
    let Some(resources) = request["resources"].as_array() else {
        return json_response(StatusCode::BAD_REQUEST, serde_json::json!({"code": 400}));
    };
    let mut state = state.lock().unwrap();
    state.commits += 1;
    let commit = format!("c{}", state.commits);
    for resource in resources {
        let (Some(uri), Some(content)) = (
            resource["resourceURI"].as_str(),
            resource["resourceContent"].as_str(),
        ) else {
            return json_response(StatusCode::BAD_REQUEST, serde_json::json!({"code": 400}));
        };
        state
            .resources
            .entry((
                project.clone(),
                stage.clone(),
                service.clone(),
                uri.to_owned(),
            ))
            .or_default()
            .push((commit.clone(), content.to_owned()));
    }
    json_response(StatusCode::CREATED, serde_json::json!({"commitID": commit}))
}

/// Starts the double on 127.0.0.1:0; returns its base URL and state.
async fn resource_service() -> anyhow::Result<(String, Shared, tokio::task::JoinHandle<()>)> {
    let state: Shared = Arc::default();
    let app = Router::new()
        .route(
            "/v1/project/{project}/stage/{stage}/service/{service}/resource/{uri}",
            get(get_resource),
        )
        .route(
            "/v1/project/{project}/stage/{stage}/service/{service}/resource",
            axum::routing::put(put_resources),
        )
        .with_state(state.clone());
    let listener = within("bind", tokio::net::TcpListener::bind("127.0.0.1:0")).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, state, server))
}

#[tokio::test]
async fn resource_service_backend() -> anyhow::Result<()> {
    let (url, state, server) = resource_service().await?;
    let store = ResourceServiceCharts::new(&url, MAX)?;
    assert!(store.describe().contains(&url), "{}", store.describe());

    common_behaviour(&store).await;

    let carts = location("sockshop", "dev", "carts");
    // Two PUTs above made commits c1 and c2; the newest is served with its commit.
    let latest = within("fetch latest", store.fetch(&carts, None))
        .await?
        .expect("chart");
    assert_eq!(
        latest.archive.as_ref(),
        chart_archive("carts", 2).as_slice()
    );
    assert_eq!(latest.commit.as_deref(), Some("c2"));
    // Pinned to the first commit: the first chart.
    let pinned = within("fetch pinned", store.fetch(&carts, Some("c1")))
        .await?
        .expect("chart at c1");
    assert_eq!(
        pinned.archive.as_ref(),
        chart_archive("carts", 1).as_slice()
    );
    assert_eq!(pinned.commit.as_deref(), Some("c1"));
    assert!(
        within("fetch unknown commit", store.fetch(&carts, Some("c99")))
            .await?
            .is_none()
    );
    {
        let state = state.lock().unwrap();
        assert!(state.queries.contains(&Some("gitCommitID=c1".to_owned())));
        assert!(state.queries.contains(&None));
        // Stored as helm/<service>.tgz, base64.
        let versions = &state.resources[&(
            "sockshop".to_owned(),
            "dev".to_owned(),
            "carts".to_owned(),
            "helm/carts.tgz".to_owned(),
        )];
        assert_eq!(
            versions[0].1,
            base64::engine::general_purpose::STANDARD.encode(chart_archive("carts", 1))
        );
    }

    // Other files of the service, same API.
    state.lock().unwrap().resources.insert(
        (
            "sockshop".into(),
            "dev".into(),
            "carts".into(),
            "helm/endpoints.yaml".into(),
        ),
        vec![(
            "c7".into(),
            base64::engine::general_purpose::STANDARD.encode("deploymentURIsLocal: []\n"),
        )],
    );
    let file = within(
        "fetch_file",
        store.fetch_file(&carts.file("helm/endpoints.yaml").unwrap(), None),
    )
    .await?
    .expect("endpoints");
    assert_eq!(file.as_ref(), b"deploymentURIsLocal: []\n");

    // Server errors are transient, client errors are not, bad answers are invalid.
    let err = within(
        "fetch 503",
        store.fetch(&location("broken", "dev", "carts"), None),
    )
    .await
    .expect_err("503");
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().contains("git is down"), "{err}");
    let err = within(
        "fetch 403",
        store.fetch(&location("forbidden", "dev", "carts"), None),
    )
    .await
    .expect_err("403");
    assert!(matches!(err, ChartStoreError::Refused { .. }), "{err:?}");
    let err = within(
        "fetch huge",
        store.fetch(&location("huge", "dev", "carts"), None),
    )
    .await
    .expect_err("too large");
    assert!(matches!(err, ChartStoreError::TooLarge { .. }), "{err:?}");
    let err = within(
        "fetch endless",
        store.fetch(&location("endless", "dev", "carts"), None),
    )
    .await
    .expect_err("too large");
    assert!(matches!(err, ChartStoreError::TooLarge { .. }), "{err:?}");
    let err = within(
        "fetch garbage",
        store.fetch(&location("garbage", "dev", "carts"), None),
    )
    .await
    .expect_err("not base64");
    assert!(matches!(err, ChartStoreError::Invalid { .. }), "{err:?}");
    assert!(err.to_string().contains("base64"), "{err}");

    // Listing is not something the resource-service can do for us.
    let err = within("list", store.list(None))
        .await
        .expect_err("unsupported");
    assert!(
        matches!(err, ChartStoreError::Unsupported { .. }),
        "{err:?}"
    );

    // Server gone: transient. (A fresh client: the old one may hold a pooled connection
    // served by a task of its own.)
    server.abort();
    let _ = server.await;
    let store = ResourceServiceCharts::new(&url, MAX)?;
    let err = within("fetch while down", store.fetch(&carts, None))
        .await
        .expect_err("server down");
    assert!(err.is_transient(), "{err:?}");
    Ok(())
}

/// The double behind a gateway that answers 401 unless `x-token` is `token`.
async fn resource_service_behind_a_gateway(
    token: &'static str,
) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let (inner, _state, inner_server) = resource_service().await?;
    let client = reqwest::Client::new();
    let gateway = Router::new().fallback(
        move |method: axum::http::Method,
              uri: axum::http::Uri,
              headers: axum::http::HeaderMap,
              body: Bytes| {
            let client = client.clone();
            let inner = inner.clone();
            async move {
                if headers.get("x-token").and_then(|v| v.to_str().ok()) != Some(token) {
                    return StatusCode::UNAUTHORIZED.into_response();
                }
                let answer = client
                    .request(method, format!("{inner}{uri}"))
                    .header(axum::http::header::CONTENT_TYPE, "application/json")
                    .body(body)
                    .send()
                    .await
                    .expect("the double answers");
                let status = answer.status();
                let body = answer.bytes().await.expect("a body");
                (status, body).into_response()
            }
        },
    );
    let listener = within("bind", tokio::net::TcpListener::bind("127.0.0.1:0")).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, gateway).await;
        inner_server.abort();
    });
    Ok((url, server))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_service_token_is_sent_as_x_token() -> anyhow::Result<()> {
    const TOKEN: &str = "rs-token-61c0-secret";
    let (url, _server) = resource_service_behind_a_gateway(TOKEN).await?;
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n"))?;
    let config = |token_file: Option<std::path::PathBuf>| ChartStoreConfig {
        chart_store: ChartStoreKind::ResourceService,
        chart_bucket: "unused".into(),
        resource_service_url: url.clone(),
        resource_service_token_file: token_file,
        resource_service_ca: None,
        charts_dir: None,
        use_commit_id: false,
        max_chart_bytes: MAX,
        max_chart_unpacked_bytes: MAX * 4,
    };
    let carts = location("sockshop", "dev", "carts");

    let store = config(Some(token_file.clone())).open_without_nats()?;
    within("store", store.store(&carts, &chart_archive("carts", 1))).await?;
    let fetched = within("fetch", store.fetch(&carts, None)).await?;
    assert!(fetched.is_some(), "the chart is served through the gateway");
    assert!(!store.describe().contains(TOKEN));

    // Without the token the gateway refuses: a refusal, not a transient trouble.
    let store = config(None).open_without_nats()?;
    let err = within("fetch without token", store.fetch(&carts, None))
        .await
        .expect_err("401");
    assert!(matches!(err, ChartStoreError::Refused { .. }), "{err:?}");
    assert!(err.to_string().contains("401"), "{err}");

    // A token file that cannot be read: a configuration error naming the flag.
    let err = config(Some(dir.path().join("missing")))
        .open_without_nats()
        .err()
        .expect("unreadable token file");
    assert!(
        err.to_string()
            .contains("cannot read --resource-service-token-file"),
        "{err}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_service_over_https_with_a_private_ca() -> anyhow::Result<()> {
    let pki = test_harness::pki::TestPki::generate("resource-service-ca")?;
    let other = test_harness::pki::TestPki::generate("someone-else")?;
    let port = test_harness::free_port();
    // openssl's test server answers every GET over TLS with a status page (HTML).
    let mut server = test_harness::ChildProcess::builder("openssl")
        .args(["s_server", "-quiet", "-www", "-accept"])
        .arg(port.to_string())
        .arg("-cert")
        .arg(pki.server_cert())
        .arg("-key")
        .arg(pki.server_key())
        .spawn()?;
    test_harness::wait_until(
        "openssl s_server to listen",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
        },
    )
    .await?;
    let url = format!("https://127.0.0.1:{port}");
    let carts = location("sockshop", "dev", "carts");
    let store = |ca: &std::path::Path| {
        ResourceServiceCharts::with_access(
            &url,
            MAX,
            &worker::charts::resource_service::ResourceServiceAccess {
                token: None,
                ca_pem: Some(std::fs::read(ca).expect("the CA file")),
            },
        )
    };

    // Trusted: the TLS handshake succeeds and the (HTML) answer is read, not taken for JSON.
    let err = within("fetch over TLS", store(&pki.ca())?.fetch(&carts, None))
        .await
        .expect_err("an HTML page is no resource");
    assert!(matches!(err, ChartStoreError::Invalid { .. }), "{err:?}");
    // Another CA: the handshake fails.
    let err = within("fetch untrusted", store(&other.ca())?.fetch(&carts, None))
        .await
        .expect_err("untrusted");
    assert!(
        err.to_string().contains("certificate"),
        "the error names the certificate: {err}"
    );
    // Without the CA, the built-in roots do not know it either.
    let err = within(
        "fetch without CA",
        ResourceServiceCharts::new(&url, MAX)?.fetch(&carts, None),
    )
    .await
    .expect_err("untrusted");
    assert!(err.to_string().contains("certificate"), "{err}");
    server.kill_hard().await?;
    Ok(())
}
