//! The RocksDB backend: the conformance suite over a temporary directory, options, and errors
//! that come back as errors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use mqtt_hook_rocksdb::{RocksDbBackend, RocksDbOptions};
use mqtt_storage::{Backend, BackendError, Batch};

fn options(path: &std::path::Path) -> RocksDbOptions {
    RocksDbOptions {
        path: path.to_path_buf(),
        write_buffer_size_bytes: 4 * 1024 * 1024,
        ..RocksDbOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    mqtt_storage::conformance::run(|| {
        let options = options(&path);
        async move {
            RocksDbBackend::open(options)
                .await
                .expect("open the RocksDB store")
        }
    })
    .await;
}

#[tokio::test]
async fn passes_the_conformance_suite_on_a_current_thread_runtime_with_small_memtables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    mqtt_storage::conformance::run(|| {
        // Memtables of 64 KiB: the data goes through table files and compactions too.
        let options = RocksDbOptions {
            write_buffer_size_bytes: 64 * 1024,
            ..options(&path)
        };
        async move {
            RocksDbBackend::open(options)
                .await
                .expect("open the RocksDB store")
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
    let error = RocksDbBackend::open(options(&file.join("db")))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            BackendError::Failed {
                backend: "rocksdb",
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_store_open_twice_is_an_error_for_the_second() {
    let dir = tempfile::tempdir().unwrap();
    let first = RocksDbBackend::open(options(dir.path())).await.unwrap();
    first.put(b"k", b"v").await.unwrap();
    // RocksDB locks its directory: a second process (or a second open) gets an error.
    let second = RocksDbBackend::open(options(dir.path())).await;
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
    let backend = RocksDbBackend::open(options(dir.path())).await.unwrap();
    let clone = backend.clone();
    let mut batch = Batch::new();
    batch.put(b"a".as_slice(), b"1".as_slice());
    backend.write(batch).await.unwrap();
    assert_eq!(
        clone.get(b"a").await.unwrap().as_deref(),
        Some(b"1".as_slice())
    );
    assert_eq!(clone.name(), "rocksdb");
    assert!(format!("{backend:?}").contains("RocksDbBackend"));
}

#[tokio::test]
async fn unbounded_delete_prefix_covers_keys_put_earlier_in_the_batch() {
    // A prefix of 0xff bytes has no range-deletion bound: it is expanded into keys, which must
    // include the keys the same batch put before it.
    let dir = tempfile::tempdir().unwrap();
    let backend = RocksDbBackend::open(options(dir.path())).await.unwrap();
    backend.put(b"\xff\xffold", b"1").await.unwrap();
    backend.put(b"\xfe", b"stays").await.unwrap();
    let mut batch = Batch::new();
    batch
        .put(b"\xff\xffin batch".as_slice(), b"2".as_slice())
        .delete_prefix(b"\xff\xff".as_slice())
        .put(b"\xff\xffafter".as_slice(), b"3".as_slice());
    backend.write(batch).await.unwrap();
    assert_eq!(
        backend.scan_prefix(b"").await.unwrap(),
        vec![
            (b"\xfe".to_vec(), b"stays".to_vec()),
            (b"\xff\xffafter".to_vec(), b"3".to_vec()),
        ]
    );
}

#[test]
fn options_from_a_configuration_file() {
    let options: RocksDbOptions = serde_json::from_str(
        r#"{"path": "/var/lib/mochi/rocksdb", "write_buffer_size_bytes": 1048576}"#,
    )
    .unwrap();
    assert_eq!(options.path, std::path::Path::new("/var/lib/mochi/rocksdb"));
    assert_eq!(options.write_buffer_size_bytes, 1_048_576);
    assert_eq!(
        options.max_background_jobs,
        RocksDbOptions::default().max_background_jobs
    );

    let empty: RocksDbOptions = serde_json::from_str("{}").unwrap();
    assert_eq!(empty, RocksDbOptions::default());

    let unknown = serde_json::from_str::<RocksDbOptions>(r#"{"write_buffer_size": 1}"#);
    assert!(unknown.is_err(), "an unknown field is an error");

    let round_trip: RocksDbOptions =
        serde_json::from_str(&serde_json::to_string(&options).unwrap()).unwrap();
    assert_eq!(round_trip, options);
}
