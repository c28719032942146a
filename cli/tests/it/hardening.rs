//! The public edge of a running system: nothing on the gateway's port that is not for the
//! public.

use std::os::unix::fs::PermissionsExt;

use crate::{Comb, repo_topology, text};

const FAULTS: &str = "/_comb/faults";

#[tokio::test]
async fn faults_answer_only_the_systems_token() {
    let comb = Comb::up(&repo_topology());
    let gateway = comb.gateway();
    let token_file = std::path::Path::new(&comb.data_dir()).join("operator.token");
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert!(token.len() >= 32, "a token nobody guesses: {token:?}");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "readable by its owner alone: {mode:o}");

    // Anyone who reaches the public port: no fault endpoint at all.
    for presented in [None, Some("0123456789abcdef0123456789abcdef")] {
        let mut put = comb
            .http
            .put(format!("{gateway}{FAULTS}"))
            .json(&serde_json::json!({"error_rate": 1}));
        if let Some(presented) = presented {
            put = put.header("x-comb-operator-token", presented);
        }
        assert_eq!(put.send().await.unwrap().status(), 404, "{presented:?}");
        let get = comb.http.get(format!("{gateway}{FAULTS}")).send().await;
        assert_eq!(get.unwrap().status(), 404);
    }
    let products = comb
        .http
        .get(format!("{gateway}/api/v1/products?limit=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(products.status(), 200, "no fault was injected");

    // The operator, through comb chaos, with the system's token.
    let injected = comb.run(&["chaos", "inject", "gateway", "--errors", "1"]);
    assert!(injected.status.success(), "{}", text(&injected));
    let failing = comb
        .http
        .get(format!("{gateway}/api/v1/categories"))
        .send()
        .await
        .unwrap();
    assert_eq!(failing.status(), 503);
    let cleared = comb.run(&["chaos", "clear", "gateway"]);
    assert!(cleared.status.success(), "{}", text(&cleared));
}

#[tokio::test]
async fn comb_fault_injection_false_is_honoured() {
    let comb = Comb::up_with_env(&repo_topology(), &[("COMB_FAULT_INJECTION", "false")]);
    let token =
        std::fs::read_to_string(std::path::Path::new(&comb.data_dir()).join("operator.token"))
            .unwrap();
    let put = comb
        .http
        .put(format!("{}{FAULTS}", comb.gateway()))
        .header("x-comb-operator-token", token.trim())
        .json(&serde_json::json!({"error_rate": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 404, "even with the token");
    let refused = comb.run(&["chaos", "inject", "catalog", "--errors", "1"]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("does not take injected faults"),
        "{}",
        text(&refused)
    );
}

#[tokio::test]
async fn the_dashboard_answers_only_its_own_host() {
    let comb = Comb::up(&repo_topology());
    let dashboard = comb.dashboard();
    let own = comb.http.get(&dashboard).send().await.unwrap();
    assert_eq!(own.status(), 200);
    // A page on another site whose name now points here (DNS rebinding).
    let foreign = comb
        .http
        .get(&dashboard)
        .header("host", "attacker.example:8090")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 421);
    let scale = comb
        .http
        .post(format!("{dashboard}/scale"))
        .header("host", "attacker.example")
        .json(&serde_json::json!({"service": "catalog", "replicas": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(scale.status(), 421);
}
