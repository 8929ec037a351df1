//! Host ports: distinct under concurrency, programs outside addond respected, exhaustion
//! answered cleanly.

use std::collections::HashSet;

use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_concurrent_creations_get_two_hundred_ports() {
    let d = Daemon::start_with(Options { ports: port_slice(210), ..Default::default() }).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let client = d.client.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({"name": format!("c{i}"), "image": IMAGE, "resource_limits": {"memory": "16m", "cpu": "0.05"}});
            client.post(SVC, Some(&body)).await.unwrap()
        }));
    }
    let mut ports = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 201, "{:?}", r.body);
        ports.extend(ports_of(r.data()));
    }
    let uniq: HashSet<u16> = ports.iter().copied().collect();
    assert_eq!(ports.len(), 200);
    assert_eq!(uniq.len(), 200, "duplicate ports handed out");
    assert!(ports.iter().all(|p| (d.ports.0..=d.ports.1).contains(p)));
    // one more than the range holds (210 - 200 = 10 left): 11 replicas do not fit
    let r = d.post(SVC, json!({"name": "toomany", "image": IMAGE, "replicas": 11})).await;
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(r.body["error"]["code"], "ports_exhausted");
    // clean up through the API so the containers go before the next test starts
    let mut tasks = Vec::new();
    for i in 0..200 {
        let client = d.client.clone();
        tasks.push(tokio::spawn(async move { client.delete(&format!("{SVC}/c{i}?wait=deleted&timeout=120")).await.unwrap() }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().status, 200);
    }
    assert!(d.containers().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn ports_held_by_other_programs_are_skipped_and_exhaustion_is_503() {
    let (start, end) = port_slice(3);
    let d = Daemon::start_with(Options { ports: (start, end), ..Default::default() }).await;
    let _held = std::net::TcpListener::bind(("127.0.0.1", start)).unwrap();
    let a = d.create_started("pa", json!({})).await;
    assert_eq!(ports_of(&a), vec![start + 1], "the held port must be skipped");
    let b = d.create_started("pb", json!({})).await;
    assert_eq!(ports_of(&b), vec![start + 2]);
    let r = d.post(SVC, json!({"name": "pc", "image": IMAGE})).await;
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(r.body["error"]["code"], "ports_exhausted");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("held by other programs"));
    assert!(d.service("pc").await.is_none());
    // a preferred port that another program holds is a conflict naming the field
    let r = d.post(SVC, json!({"name": "pd", "image": IMAGE, "host_port": start})).await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert_eq!(r.body["error"]["field"], "host_port");
    // deleting frees the port for the next service
    d.delete(&format!("{SVC}/pa?wait=deleted")).await;
    let c = d.create_started("pe", json!({})).await;
    assert_eq!(ports_of(&c), vec![start + 1]);
}
