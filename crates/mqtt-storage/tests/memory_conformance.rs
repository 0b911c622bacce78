//! The in-memory backend passes the backend conformance suite.

use mqtt_storage::MemoryBackend;

#[tokio::test]
async fn memory_backend_passes_the_conformance_suite() {
    // Clones share the map: "reopening" the store is taking another clone.
    let store = MemoryBackend::new();
    mqtt_storage::conformance::run(|| {
        let store = store.clone();
        async move { store }
    })
    .await;
    assert!(store.is_empty(), "the suite ends by deleting everything");
}
