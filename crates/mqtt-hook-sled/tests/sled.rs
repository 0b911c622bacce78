//! The sled backend: the conformance suite over a temporary directory, options, and errors that
//! come back as errors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use mqtt_hook_sled::{SledBackend, SledOptions};
use mqtt_storage::{Backend, BackendError, Batch};

fn options(path: &std::path::Path) -> SledOptions {
    SledOptions {
        path: path.to_path_buf(),
        cache_capacity_bytes: 8 * 1024 * 1024,
        ..SledOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    mqtt_storage::conformance::run(|| {
        let options = options(&path);
        async move {
            SledBackend::open(options)
                .await
                .expect("open the sled store")
        }
    })
    .await;
}

#[tokio::test]
async fn passes_the_conformance_suite_on_a_current_thread_runtime_with_background_flush() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    mqtt_storage::conformance::run(|| {
        let options = SledOptions {
            flush_every_ms: Some(100),
            ..options(&path)
        };
        async move {
            SledBackend::open(options)
                .await
                .expect("open the sled store")
        }
    })
    .await;
}

#[tokio::test]
async fn a_path_that_is_a_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not a directory");
    tokio::task::spawn_blocking({
        let file = file.clone();
        move || std::fs::File::create(file).unwrap()
    })
    .await
    .unwrap();
    let error = SledBackend::open(options(&file.join("db")))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            BackendError::Failed {
                backend: "sled",
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_store_open_twice_is_an_error_for_the_second() {
    let dir = tempfile::tempdir().unwrap();
    let first = SledBackend::open(options(dir.path())).await.unwrap();
    first.put(b"k", b"v").await.unwrap();
    // sled locks its files: a second process (or a second open) gets an error, not a panic.
    let second = SledBackend::open(options(dir.path())).await;
    assert!(
        matches!(second, Err(BackendError::Failed { .. })),
        "{second:?}"
    );
    assert_eq!(
        first.get(b"k").await.unwrap().as_deref(),
        Some(b"v".as_slice())
    );
    assert_eq!(first.path(), dir.path());
}

#[tokio::test]
async fn clones_share_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let backend = SledBackend::open(options(dir.path())).await.unwrap();
    let clone = backend.clone();
    let mut batch = Batch::new();
    batch.put(b"a".as_slice(), b"1".as_slice());
    backend.write(batch).await.unwrap();
    assert_eq!(
        clone.get(b"a").await.unwrap().as_deref(),
        Some(b"1".as_slice())
    );
    assert_eq!(clone.name(), "sled");
    assert!(format!("{backend:?}").contains("SledBackend"));
}

#[test]
fn options_from_a_configuration_file() {
    let options: SledOptions =
        serde_json::from_str(r#"{"path": "/var/lib/mochi/sled", "flush_every_ms": 1000}"#).unwrap();
    assert_eq!(options.path, std::path::Path::new("/var/lib/mochi/sled"));
    assert_eq!(options.flush_every_ms, Some(1000));
    assert_eq!(
        options.cache_capacity_bytes,
        SledOptions::default().cache_capacity_bytes
    );

    let empty: SledOptions = serde_json::from_str("{}").unwrap();
    assert_eq!(empty, SledOptions::default());

    let unknown = serde_json::from_str::<SledOptions>(r#"{"cache_capacity": 1}"#);
    assert!(unknown.is_err(), "an unknown field is an error");

    let round_trip: SledOptions =
        serde_json::from_str(&serde_json::to_string(&options).unwrap()).unwrap();
    assert_eq!(round_trip, options);
}
