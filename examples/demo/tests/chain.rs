//! The three demo services chained on loopback, as the mesh would call them (without it).

use std::time::Duration;

use mizzen_demo::{Service, Settings, VERSION_HEADER};
use tokio::net::TcpListener;

async fn start(settings: Settings) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(mizzen_demo::serve(
        listener,
        settings,
        std::future::pending(),
    ));
    format!("http://{addr}")
}

async fn get(url: &str) -> (u16, String, serde_json::Value) {
    tokio::time::timeout(Duration::from_secs(10), hyper_get(url))
        .await
        .expect("the demo answers within 10 s")
}

async fn hyper_get(url: &str) -> (u16, String, serde_json::Value) {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    let client =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let response = client.get(url.parse().unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let version = response.headers()[VERSION_HEADER]
        .to_str()
        .unwrap()
        .to_string();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (status, version, json)
}

#[tokio::test]
async fn productpage_shows_reviews_with_ratings_and_errors_propagate() {
    let ratings = start(Settings {
        service: Service::Ratings,
        version: "v1".into(),
        hosts: Default::default(),
    })
    .await;
    // Reached by name, resolved from the static table (as the local mesh points service
    // hosts at loopback).
    let ratings_port = ratings.rsplit(':').next().unwrap();
    let reviews = start(Settings {
        service: Service::Reviews {
            ratings: Some(format!("http://ratings.demo.test:{ratings_port}")),
            error_rate: 0.5,
        },
        version: "v2".into(),
        hosts: [("ratings.demo.test".to_string(), [127, 0, 0, 1].into())].into(),
    })
    .await;
    let page = start(Settings {
        service: Service::Productpage {
            reviews: reviews.clone(),
        },
        version: "v1".into(),
        hosts: Default::default(),
    })
    .await;

    let (status, version, body) = get(&format!("{ratings}/ratings/3")).await;
    assert_eq!((status, version.as_str()), (200, "v1"));
    assert_eq!(body, serde_json::json!({"stars": 5}));

    // Half of reviews' answers fail, evenly: one good page and one 502 in any two requests.
    let mut codes = Vec::new();
    for _ in 0..4 {
        let (status, version, body) = get(&format!("{page}/productpage")).await;
        assert_eq!(version, "v1");
        if status == 200 {
            assert_eq!(body["reviews"]["version"], "v2");
            assert_eq!(body["reviews"]["ratings"]["stars"], 5);
            assert_eq!(body["product"]["id"], 0);
        } else {
            assert!(body["error"].as_str().unwrap().contains("500"), "{body}");
        }
        codes.push(status);
    }
    codes.sort();
    assert_eq!(codes, [200, 200, 502, 502]);

    let (status, version, _) = get(&format!("{reviews}/healthz")).await;
    assert_eq!((status, version.as_str()), (200, "v2"));
}

#[tokio::test]
async fn reviews_v1_shows_no_stars() {
    let reviews = start(Settings {
        service: Service::Reviews {
            ratings: Some("http://127.0.0.1:9".into()),
            error_rate: 0.0,
        },
        version: "v1".into(),
        hosts: Default::default(),
    })
    .await;
    let (status, version, body) = get(&format!("{reviews}/reviews/7")).await;
    assert_eq!((status, version.as_str()), (200, "v1"));
    assert_eq!(body["id"], 7);
    assert!(body["ratings"].is_null());
}
