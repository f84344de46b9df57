//! The audit webhook endpoint refuses whatever is not the API server: no or
//! a wrong bearer token, plain HTTP, malformed or oversized bodies. The
//! admission endpoints answer over TLS only. The operator keeps running
//! through all of it.

use std::process::Command;

use driftwarden_dev::controlplane::User;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use crate::support::http_get;
use crate::support::operator::{OPERATOR, operator_env};

/// POSTs `body` (a file) to the audit endpoint; returns the HTTP status, or
/// None when no HTTP answer came back at all.
fn post(scheme: &str, port: u16, token: Option<&str>, body: &std::path::Path) -> Option<u16> {
    let mut curl = Command::new("curl");
    curl.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20", "--insecure"])
        .args(["-H", "Content-Type: application/json", "--data-binary"])
        .arg(format!("@{}", body.display()))
        .arg(format!("{scheme}://127.0.0.1:{port}/audit"));
    if let Some(token) = token {
        curl.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    let out = curl.output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok().filter(|code| *code != 0)
}

/// (case, scheme, bearer token, body, expected HTTP status)
type Case<'a> = (&'a str, &'a str, Option<&'a str>, &'a std::path::Path, Option<u16>);

#[tokio::test]
async fn the_audit_endpoint_refuses_everything_but_the_api_server() {
    let _running = OPERATOR.read().await;
    let operator = operator_env();
    let admin = operator.cp.client(User::Admin).await.unwrap();
    let secret = Api::<Secret>::namespaced(admin, "driftwarden-system").get("driftwarden-audit").await.unwrap();
    let token = String::from_utf8(secret.data.unwrap()["token"].0.clone()).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, content: Vec<u8>| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    };
    let empty = file("empty.json", br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[]}"#.to_vec());
    let malformed = file("malformed.json", b"{\"kind\": \"EventList\", \"items\": [".to_vec());
    let junk = file("junk.bin", (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect());
    let mut huge = br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[],"pad":""#.to_vec();
    huge.extend(std::iter::repeat_n(b'x', 40 << 20));
    huge.extend(br#""}"#);
    let huge = file("huge.json", huge);

    let port = operator.webhook_port;
    let cases: Vec<Case<'_>> = vec![
        ("no token", "https", None, &empty, Some(401)),
        ("a wrong token", "https", Some("not-the-token"), &empty, Some(401)),
        ("plain HTTP", "http", Some(&token), &empty, Some(400)),
        ("malformed JSON", "https", Some(&token), &malformed, Some(400)),
        ("binary junk", "https", Some(&token), &junk, Some(400)),
        ("a batch over the size limit", "https", Some(&token), &huge, Some(413)),
        ("a well-formed empty batch", "https", Some(&token), &empty, Some(200)),
    ];
    for (case, scheme, token, body, expected) in cases {
        let got = post(scheme, port, token, body);
        // Plain HTTP to a TLS port gets no HTTP answer, or a 400 from the
        // TLS layer; an oversized upload may be cut off before the 413 is read.
        let cut_off = (scheme == "http" || expected == Some(413)) && got.is_none_or(|code| code == 400 || code == 413);
        assert!(got == expected || cut_off, "{case}: got {got:?}, expected {expected:?}");
        assert_eq!(http_get(operator.http_port, "/healthz").map(|(code, _)| code), Some(200), "after {case}");
    }
}

/// The admission endpoints answer the API server over TLS only: the same
/// AdmissionReview gets a decision over HTTPS and none over plain HTTP.
#[tokio::test]
async fn the_admission_endpoints_refuse_plain_http() {
    let _running = OPERATOR.read().await;
    let operator = operator_env();
    let dir = tempfile::tempdir().unwrap();
    let review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "plain-http-probe",
            "kind": {"group": "driftwarden.io", "version": "v1alpha1", "kind": "AccessRequest"},
            "resource": {"group": "driftwarden.io", "version": "v1alpha1", "resource": "accessrequests"},
            "namespace": "driftwarden-system", "operation": "CREATE",
            "userInfo": {"username": "alice", "groups": ["dev"]},
            "object": {"apiVersion": "driftwarden.io/v1alpha1", "kind": "AccessRequest",
                       "metadata": {"name": "probe", "namespace": "driftwarden-system"},
                       "spec": {"role": {"kind": "ClusterRole", "name": "edit"}, "duration": "1m",
                                "reason": "probing the admission webhooks"}},
        },
    });
    let body = dir.path().join("review.json");
    std::fs::write(&body, serde_json::to_vec(&review).unwrap()).unwrap();
    let port = operator.webhook_port;
    for path in [driftwarden::webhook::configuration::MUTATE_PATH, driftwarden::webhook::configuration::VALIDATE_PATH] {
        let (code, answer) = post_to(path, "https", port, &body).expect("an answer over HTTPS");
        assert_eq!(code, 200, "{path} over HTTPS: {answer}");
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(answer["response"]["uid"], "plain-http-probe", "{path}: {answer}");
        // Plain HTTP to the TLS port: no HTTP answer, or a 400 from the TLS layer.
        let plain = post_to(path, "http", port, &body);
        assert!(plain.as_ref().is_none_or(|(code, _)| *code == 400), "{path} over plain HTTP answered {plain:?}");
        assert!(
            plain.as_ref().is_none_or(|(_, text)| !text.contains("plain-http-probe")),
            "{path} over plain HTTP made a decision: {plain:?}"
        );
        assert_eq!(http_get(operator.http_port, "/healthz").map(|(code, _)| code), Some(200), "after {path}");
    }
}

/// POSTs `body` to `path`: (HTTP status, response body), or None when no
/// HTTP answer came back.
fn post_to(path: &str, scheme: &str, port: u16, body: &std::path::Path) -> Option<(u16, String)> {
    let mut curl = Command::new("curl");
    curl.args(["-sS", "-w", "\n%{http_code}", "--max-time", "20", "--insecure"])
        .args(["-H", "Content-Type: application/json", "--data-binary"])
        .arg(format!("@{}", body.display()))
        .arg(format!("{scheme}://127.0.0.1:{port}{path}"));
    let out = curl.output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (answer, code) = text.rsplit_once('\n')?;
    let code: u16 = code.trim().parse().ok().filter(|code| *code != 0)?;
    Some((code, answer.to_owned()))
}
