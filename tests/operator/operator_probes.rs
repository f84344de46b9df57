use std::time::Duration;

use crate::common::setup;
use crate::support::{eventually, http_get};

#[tokio::test]
async fn the_operator_serves_health_readiness_and_metrics() {
    let t = setup("probes", serde_json::json!({})).await;
    let port = t.operator.http_port;
    assert_eq!(http_get(port, "/healthz"), Some((200, "ok".to_string())));
    let ready =
        eventually(Duration::from_secs(30), || async { http_get(port, "/readyz").filter(|(s, _)| *s == 200) }).await;
    assert!(ready.is_some(), "/readyz never answered 200 although the CRDs are installed");
    let (status, metrics) = http_get(port, "/metrics").unwrap();
    assert_eq!(status, 200);
    for family in [
        "driftwarden_access_requests",
        "driftwarden_active_grants",
        "driftwarden_grant_expiry_lag_seconds",
        "driftwarden_build_info",
    ] {
        assert!(metrics.contains(family), "/metrics lacks {family}");
    }
}
