//! The chart's Grafana dashboard against a real Prometheus (built from its
//! pinned Go module by the harness, like helm) scraping the operator through a scenario: a grant that is
//! approved and expires, a request denied, an unauthorized change reverted
//! at once, a session change reverted when its window ends. Afterwards every
//! panel query, evaluated by Prometheus, returns data.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use driftwarden::api::AccessPhase;
use driftwarden_dev::controlplane::operator::{OPERATOR_NAMESPACE, chart_dir};
use driftwarden_dev::controlplane::{self, PROMETHEUS_ENV, Supervisor, User};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::common::{AccessTest, setup};
use crate::gate::{alice_window, managed_shop, mode, replicas, scale, set_mode};
use crate::support::{eventually, http_get, required};
/// What Grafana's interval variables stand for here: long enough to cover
/// the scenario (a minute at most) at a 1 s scrape interval.
const INTERVAL: &str = "1m";

/// A Prometheus process scraping one target every second, with its own
/// storage; the supervisor stops it when this is dropped, and the kernel
/// kills it if the test binary dies first.
struct Prometheus {
    port: u16,
    log: PathBuf,
    _supervisor: Supervisor,
}

impl Prometheus {
    /// The harness's Prometheus (`dev/controlplane/build.sh prometheus`,
    /// built on first use), or the one [`PROMETHEUS_ENV`] names.
    fn binary() -> Option<PathBuf> {
        let how = format!(
            "the harness builds it with Go from the Go module proxy (`bash dev/controlplane/build.sh prometheus`); \
             or set {PROMETHEUS_ENV} to a prometheus v3 executable"
        );
        required("Prometheus", controlplane::prometheus_binary().map_err(|e| e.to_string()), &how)
    }

    /// Scrapes `127.0.0.1:<target>` as the Prometheus Operator would scrape
    /// a Pod of the release: with the `namespace` label the dashboard filters on.
    fn start(binary: &Path, dir: &Path, target: u16) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("prometheus.yml");
        let scrape = json!({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{
                "job_name": "driftwarden",
                "static_configs": [{
                    "targets": [format!("127.0.0.1:{target}")],
                    "labels": {"namespace": OPERATOR_NAMESPACE},
                }],
            }],
        });
        // JSON is YAML.
        std::fs::write(&config, scrape.to_string()).unwrap();
        let log = dir.join("prometheus.log");
        let mut command = Command::new(binary);
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=1h");
        let supervisor = Supervisor::new().unwrap();
        supervisor.spawn("prometheus", command, log.clone()).unwrap();
        Self { port, log, _supervisor: supervisor }
    }

    /// Waits until the operator's target has been scraped.
    async fn wait_until_scraping(&self) {
        let up = eventually(Duration::from_secs(60), || async {
            let series = self.try_query(r#"up{job="driftwarden"}"#).ok()?;
            series.iter().any(|s| s["value"][1] == "1").then_some(())
        })
        .await;
        assert!(up.is_some(), "Prometheus did not scrape the operator within 60s; see {}", self.log.display());
    }

    /// `GET /api/v1/query`: the result vector of an instant query, now.
    fn try_query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let path = format!("/api/v1/query?query={}", percent_encode(expr));
        let (status, body) = http_get(self.port, &path).ok_or("Prometheus did not answer")?;
        let answer: Value = serde_json::from_str(&body).map_err(|e| format!("HTTP {status}: {e}: {body}"))?;
        if answer["status"] != "success" {
            return Err(format!("HTTP {status}: {}: {}", answer["errorType"], answer["error"]));
        }
        match answer["data"]["result"].as_array() {
            Some(result) if answer["data"]["resultType"] == "vector" => Ok(result.clone()),
            _ => Err(format!("not an instant vector: {}", answer["data"])),
        }
    }

    /// `GET /api/v1/label/<label>/values?match[]=<selector>`, as Grafana's
    /// `label_values(<selector>, <label>)` asks.
    fn label_values(&self, label: &str, selector: &str) -> Vec<String> {
        let path = format!("/api/v1/label/{label}/values?match[]={}", percent_encode(selector));
        let (_, body) = http_get(self.port, &path).expect("Prometheus answers");
        let answer: Value = serde_json::from_str(&body).unwrap();
        answer["data"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A panel query as Grafana sends it with `namespace` = the operator's
/// namespace: its variables replaced (longest names first).
fn substitute(expr: &str) -> String {
    let variables = [
        ("${namespace}", OPERATOR_NAMESPACE),
        ("$namespace", OPERATOR_NAMESPACE),
        ("$__rate_interval", INTERVAL),
        ("$__interval_ms", "60000"),
        ("$__interval", INTERVAL),
        ("$__range_ms", "60000"),
        ("$__range_s", "60"),
        ("$__range", INTERVAL),
    ];
    let expr = variables.iter().fold(expr.to_owned(), |e, (variable, value)| e.replace(variable, value));
    assert!(!expr.contains('$'), "a variable this test does not know in {expr}");
    expr
}

/// `(panel title, refId, expr)` of every target, rows' collapsed panels included.
fn panel_queries(dashboard: &Value) -> Vec<(String, String, String)> {
    fn walk(panels: &[Value], out: &mut Vec<(String, String, String)>) {
        for panel in panels {
            let title = panel["title"].as_str().unwrap_or_default();
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().unwrap_or_default();
                out.push((title.into(), target["refId"].as_str().unwrap_or_default().into(), expr.into()));
            }
            walk(panel["panels"].as_array().map_or(&[], |p| p.as_slice()), out);
        }
    }
    let mut out = Vec::new();
    walk(dashboard["panels"].as_array().unwrap(), &mut out);
    out
}

/// A series' value; NaN draws nothing in Grafana.
fn value(series: &Value) -> f64 {
    series["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

/// Everything the dashboard shows, made to happen once: alice's `edit`
/// window (approved by carol) in which she scales `web`; bob's request,
/// denied by dave; an unauthorized change to `settings`, reverted at once;
/// the window's end, which reverts alice's change and expires her grant.
async fn scenario(t: &AccessTest) {
    managed_shop(t, json!({})).await;
    let expires_at = alice_window(t, "alice-dashboard", "15s").await;

    t.request(User::Bob, "bob-dashboard", "view", "10m").await.unwrap();
    t.review(User::Dave, "bob-dashboard-no", "bob-dashboard", "Deny").await.unwrap();
    t.wait_for_phase("bob-dashboard", AccessPhase::Denied, Duration::from_secs(10)).await;

    scale(t, User::Alice, 5).await;
    set_mode(t, User::Admin, "hotfix").await;
    let reverted = eventually(Duration::from_secs(10), || async { (mode(t).await == "safe").then_some(()) }).await;
    assert!(reverted.is_some(), "the unauthorized change to settings was not reverted");
    assert_eq!(replicas(t).await, 5, "alice's change is held until her window ends");

    let wait = expires_at.duration_since(Timestamp::now());
    tokio::time::sleep(Duration::try_from(wait).unwrap_or_default()).await;
    t.wait_for_phase("alice-dashboard", AccessPhase::Expired, Duration::from_secs(10)).await;
    let reverted = eventually(Duration::from_secs(10), || async { (replicas(t).await == 2).then_some(()) }).await;
    assert!(reverted.is_some(), "alice's change was not reverted when her window ended");
}

#[tokio::test]
async fn every_dashboard_panel_shows_data_from_prometheus_scraping_a_real_run() {
    let Some(binary) = tokio::task::spawn_blocking(Prometheus::binary).await.unwrap() else { return };
    let t = setup("dashboard", json!({})).await;
    let dir = t.operator.cp.dir().join(format!("prometheus-{}", t.env.namespace));
    let prometheus = Prometheus::start(&binary, &dir, t.operator.http_port);
    prometheus.wait_until_scraping().await;

    scenario(&t).await;
    // A few more scrapes, so the last changes are in.
    tokio::time::sleep(Duration::from_secs(4)).await;

    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(chart_dir().join("dashboards/driftwarden.json")).unwrap())
            .unwrap();
    // The $namespace variable offers the operator's namespace.
    let namespaces = prometheus.label_values("namespace", "driftwarden_build_info");
    assert_eq!(namespaces, [OPERATOR_NAMESPACE]);

    let queries = panel_queries(&dashboard);
    assert!(queries.len() >= 20, "only {} panel queries found", queries.len());
    let mut shown = BTreeMap::new();
    let mut empty = Vec::new();
    for (title, ref_id, expr) in &queries {
        let query = substitute(expr);
        let result = prometheus.try_query(&query).unwrap_or_else(|e| panic!("{title} ({ref_id}): {query}: {e}"));
        let series: Vec<(Value, f64)> = result.iter().map(|s| (s["metric"].clone(), value(s))).collect();
        eprintln!("{title} ({ref_id}): {series:?}");
        if !series.iter().any(|(_, v)| v.is_finite()) {
            empty.push(format!("{title} ({ref_id}): {query} -> {result:?}"));
        }
        shown.insert((title.as_str(), ref_id.as_str()), series);
    }
    assert!(empty.is_empty(), "panel queries without data:\n{}", empty.join("\n"));

    // And the data says what happened: each of the scenario's events is
    // counted, also the first of its kind (a series that appears during
    // the run), and one replica leads.
    let value_of = |panel: &str, ref_id: &str, label: &str, value: &str| -> f64 {
        let series = &shown[&(panel, ref_id)];
        let found = series.iter().find(|(metric, _)| label.is_empty() || metric[label] == value);
        found.map_or_else(|| panic!("{panel} ({ref_id}) has no {label}={value}: {series:?}"), |(_, v)| *v)
    };
    for (panel, ref_id, label, value) in [
        ("Detections and reverts", "A", "", ""),
        ("Detections and reverts", "B", "reason", "unauthorized"),
        ("Detections and reverts", "B", "reason", "window_ended"),
        ("Approvals and denials", "A", "outcome", "Approved"),
        ("Approvals and denials", "A", "outcome", "Denied"),
        ("Access requests by phase", "A", "phase", "Expired"),
        ("Access requests by phase", "A", "phase", "Denied"),
    ] {
        let shown = value_of(panel, ref_id, label, value);
        assert!(shown >= 1.0, "{panel} ({ref_id}) shows {shown} for {label}={value} after the scenario");
    }
    assert_eq!(value_of("Leader", "A", "", ""), 1.0);
}
