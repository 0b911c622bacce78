//! The conformance suite every [`Backend`] passes.
//!
//! The storage hook relies on a handful of properties that are easy to get subtly wrong in a
//! key-value store: bytewise key order (queued messages are keyed by a big-endian sequence
//! number), prefix scans that stop exactly at the prefix (`a\0` must not match `ab`), batches
//! applied all together and in order (a `DeletePrefix` followed by a `Put` under the same prefix
//! keeps the new key), values that are empty, binary or large, and data that survives a restart.
//! [`run`] checks each of them; a backend crate calls it from an integration test:
//!
//! ```no_run
//! # async fn example() {
//! use mqtt_storage::MemoryBackend;
//!
//! // Clones of a `MemoryBackend` share their map, so "reopening" is taking another clone.
//! let store = MemoryBackend::new();
//! mqtt_storage::conformance::run(|| {
//!     let store = store.clone();
//!     async move { store }
//! })
//! .await;
//! # }
//! ```
//!
//! A failed check panics with a message that names the backend, the case and the keys involved,
//! which is what a test wants. The suite writes about 1,000 keys and 2 MiB that stay in the
//! store until its last step, which removes everything.

use std::fmt::Write as _;
use std::future::Future;

use crate::backend::{Backend, BackendError, Batch};

/// The (key, value) pairs a scan returns.
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Runs the whole suite.
///
/// `open` gives a backend over the store under test. The first call must give an **empty**
/// store; every later call must give the **same** store again, as a process restart would
/// (reopen the same path, connect to the same server with the same key prefix, take another
/// clone of a shared map). The suite drops the previous backend before it calls `open` again, so
/// a backend that locks its files can reopen them.
///
/// The cases, in order: put and get (through [`Backend::put`] and [`Backend::delete`] too),
/// overwrite, delete (present, absent, twice), prefix scans in bytewise order (`\0` separators,
/// big-endian `u64` suffixes, bytes above `0x7f`, prefixes ending in `0xff`, a prefix that must
/// not match a longer sibling), batches applied in order (`DeletePrefix` then `Put`, `Put` then
/// `Delete`, `Put` then `DeletePrefix`, the empty batch), empty values, binary keys and values, a
/// 1 MiB value, 10,000 keys in one batch, concurrent writes, then a restart (everything written
/// is still there, byte for byte), a delete of everything, and a second restart (still empty).
///
/// # Panics
///
/// On the first check that fails, and on any error the backend returns.
pub async fn run<B, F, Fut>(mut open: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = B>,
    B: Backend,
{
    let backend = open().await;
    let suite = Suite::new(&backend);
    suite.starts_empty().await;
    suite.put_get().await;
    suite.overwrite().await;
    suite.delete().await;
    suite.delete_prefix_bounds().await;
    suite.scan_order().await;
    suite.scan_high_bytes().await;
    suite.batch_order().await;
    suite.empty_batch().await;
    suite.empty_values().await;
    suite.binary().await;
    suite.large_value().await;
    suite.many_keys().await;
    suite.concurrent_writes().await;
    let before = suite.scan(b"", "snapshot before the restart").await;
    let name = suite.name;
    drop(backend);

    // Restart: everything written is still there.
    let backend = open().await;
    let suite = Suite::new(&backend);
    assert!(
        suite.name == name,
        "the reopened backend is a {:?}, not a {name:?}",
        suite.name
    );
    let after = suite.scan(b"", "snapshot after the restart").await;
    suite.same_pairs(&after, &before, "the whole store after a restart");
    suite.writes_after_restart().await;

    // Delete everything, which must survive a restart too.
    let mut batch = Batch::new();
    batch.delete_prefix(b"".as_slice());
    suite
        .write(batch, "DeletePrefix(\"\") of the whole store")
        .await;
    let left = suite.scan(b"", "scan after DeletePrefix(\"\")").await;
    suite.same_pairs(&left, &[], "the store after DeletePrefix(\"\")");
    drop(backend);

    let backend = open().await;
    let suite = Suite::new(&backend);
    let left = suite.scan(b"", "scan after the second restart").await;
    suite.same_pairs(&left, &[], "the emptied store after a restart");
}

/// The suite's checks over one backend instance.
struct Suite<'a, B> {
    backend: &'a B,
    name: &'static str,
}

impl<'a, B: Backend> Suite<'a, B> {
    fn new(backend: &'a B) -> Self {
        Self {
            backend,
            name: backend.name(),
        }
    }

    // Calls that panic on error with the backend's name and what the suite was doing.

    #[track_caller]
    fn ok<T>(&self, result: Result<T, BackendError>, what: &str) -> T {
        match result {
            Ok(value) => value,
            Err(error) => panic!("[{}] {what}: the backend failed: {error}", self.name),
        }
    }

    async fn write(&self, batch: Batch, what: &str) {
        let result = self.backend.write(batch).await;
        self.ok(result, what);
    }

    async fn put(&self, key: &[u8], value: &[u8], what: &str) {
        let mut batch = Batch::new();
        batch.put(key, value);
        self.write(batch, what).await;
    }

    async fn get(&self, key: &[u8], what: &str) -> Option<Vec<u8>> {
        let result = self.backend.get(key).await;
        self.ok(result, what)
    }

    async fn scan(&self, prefix: &[u8], what: &str) -> Pairs {
        let result = self.backend.scan_prefix(prefix).await;
        self.ok(result, what)
    }

    /// Checks that `key` holds `expected` (`None`: absent).
    async fn expect(&self, key: &[u8], expected: Option<&[u8]>, case: &str) {
        let found = self.get(key, &format!("{case}: get {}", show(key))).await;
        assert!(
            found.as_deref() == expected,
            "[{}] {case}: get {} returned {}, expected {}",
            self.name,
            show(key),
            show_value(found.as_deref()),
            show_value(expected),
        );
    }

    /// Checks that a scan of `prefix` returns exactly `expected`, in that order.
    async fn expect_scan(&self, prefix: &[u8], expected: &[(Vec<u8>, Vec<u8>)], case: &str) {
        let found = self
            .scan(prefix, &format!("{case}: scan {}", show(prefix)))
            .await;
        self.same_pairs(&found, expected, &format!("{case}: scan {}", show(prefix)));
    }

    #[track_caller]
    fn same_pairs(
        &self,
        found: &[(Vec<u8>, Vec<u8>)],
        expected: &[(Vec<u8>, Vec<u8>)],
        what: &str,
    ) {
        if found == expected {
            return;
        }
        let found_keys: Vec<&[u8]> = found.iter().map(|(k, _)| k.as_slice()).collect();
        let expected_keys: Vec<&[u8]> = expected.iter().map(|(k, _)| k.as_slice()).collect();
        if found_keys != expected_keys {
            let position = found_keys
                .iter()
                .zip(&expected_keys)
                .position(|(found, expected)| found != expected)
                .unwrap_or(found_keys.len().min(expected_keys.len()));
            let at = |keys: &[&[u8]]| keys.get(position).map_or("nothing".to_owned(), |k| show(k));
            panic!(
                "[{}] {what}: returned {} keys, expected {}; the first difference is at position \
                 {position}: {} where {} was expected\n  found:    {}\n  expected: {}",
                self.name,
                found.len(),
                expected.len(),
                at(&found_keys),
                at(&expected_keys),
                show_keys(&found_keys),
                show_keys(&expected_keys),
            );
        }
        for ((key, value), (_, want)) in found.iter().zip(expected) {
            assert!(
                value == want,
                "[{}] {what}: {} holds {}, expected {}",
                self.name,
                show(key),
                show_value(Some(value)),
                show_value(Some(want)),
            );
        }
    }

    // The cases.

    async fn starts_empty(&self) {
        let found = self.scan(b"", "scan of the fresh store").await;
        assert!(
            found.is_empty(),
            "[{}] the suite needs an empty store the first time `open` is called; it holds {} \
             keys: {}",
            self.name,
            found.len(),
            show_keys(&found.iter().map(|(k, _)| k.as_slice()).collect::<Vec<_>>()),
        );
    }

    async fn put_get(&self) {
        let case = "put/get";
        self.put(b"pg\0one", b"1", case).await;
        self.expect(b"pg\0one", Some(b"1"), case).await;
        self.expect(b"pg\0two", None, case).await;
        self.expect(b"pg\0", None, "put/get (a prefix of a key is not a key)")
            .await;
        self.expect(b"pg\0one\0", None, "put/get (a longer key is another key)")
            .await;

        // The trait's one-key helpers.
        let result = self.backend.put(b"pg\0two", b"2").await;
        self.ok(result, "Backend::put");
        self.expect(b"pg\0two", Some(b"2"), "Backend::put").await;
        let result = self.backend.delete(b"pg\0two").await;
        self.ok(result, "Backend::delete");
        self.expect(b"pg\0two", None, "Backend::delete").await;
        self.expect_scan(b"pg\0", &[pair(b"pg\0one", b"1")], case)
            .await;
    }

    async fn overwrite(&self) {
        let case = "overwrite";
        self.put(b"ow\0k", b"first value, rather long", case).await;
        self.put(b"ow\0k", b"x", case).await;
        self.expect(b"ow\0k", Some(b"x"), "overwrite with a shorter value")
            .await;
        self.put(b"ow\0k", b"a longer value than x", case).await;
        self.expect(b"ow\0k", Some(b"a longer value than x"), case)
            .await;
        self.expect_scan(b"ow\0", &[pair(b"ow\0k", b"a longer value than x")], case)
            .await;
    }

    async fn delete(&self) {
        let case = "delete";
        self.put(b"del\0a", b"a", case).await;
        self.put(b"del\0b", b"b", case).await;
        let mut batch = Batch::new();
        batch.delete(b"del\0a".as_slice());
        self.write(batch, "delete of a present key").await;
        self.expect(b"del\0a", None, case).await;
        self.expect(b"del\0b", Some(b"b"), "delete (a sibling stays)")
            .await;

        let mut batch = Batch::new();
        batch.delete(b"del\0a".as_slice());
        self.write(batch, "delete of a key already deleted").await;
        let mut batch = Batch::new();
        batch.delete(b"del\0never written".as_slice());
        self.write(batch, "delete of a key never written").await;
        let mut batch = Batch::new();
        batch.delete_prefix(b"del\0nothing here\0".as_slice());
        self.write(batch, "DeletePrefix of a prefix with no key")
            .await;
        self.expect_scan(b"del\0", &[pair(b"del\0b", b"b")], case)
            .await;
    }

    async fn delete_prefix_bounds(&self) {
        let case = "DeletePrefix bounds";
        let keys: [&[u8]; 7] = [
            b"dp",
            b"dp\0",
            b"dp\0a",
            b"dp\0a\0",
            b"dp\0a\0x",
            b"dp\0ab",
            b"dp\0b",
        ];
        let mut batch = Batch::new();
        for key in keys {
            batch.put(key, key);
        }
        self.write(batch, case).await;

        let mut batch = Batch::new();
        batch.delete_prefix(b"dp\0a\0".as_slice());
        self.write(batch, "DeletePrefix(\"dp\\0a\\0\")").await;
        let left: Vec<_> = [b"dp".as_slice(), b"dp\0", b"dp\0a", b"dp\0ab", b"dp\0b"]
            .into_iter()
            .map(|k| pair(k, k))
            .collect();
        self.expect_scan(
            b"dp",
            &left,
            "DeletePrefix(\"dp\\0a\\0\") removes \"dp\\0a\\0\" and \"dp\\0a\\0x\" only",
        )
        .await;

        let mut batch = Batch::new();
        batch.delete_prefix(b"dp\0".as_slice());
        self.write(batch, "DeletePrefix(\"dp\\0\")").await;
        self.expect_scan(
            b"dp",
            &[pair(b"dp", b"dp")],
            "DeletePrefix(\"dp\\0\") keeps \"dp\"",
        )
        .await;
    }

    async fn scan_order(&self) {
        let case = "scan order";
        let mut keys: Vec<Vec<u8>> = [
            b"order\0".as_slice(),
            b"order\0a",
            b"order\0a\0",
            b"order\0a\0b",
            b"order\0ab",
            b"order\0b",
            b"order\0B",
            b"order\0\0",
            b"order\0\x7f",
            b"order\0\x80",
            b"order\0\xfe",
            b"order\0\xff",
            b"order\0\xff\xff",
            b"orderly",
            b"ordes",
        ]
        .into_iter()
        .map(<[u8]>::to_vec)
        .collect();
        let sequence = [
            0,
            1,
            2,
            9,
            10,
            255,
            256,
            1_000,
            65_535,
            65_536,
            1 << 32,
            u64::MAX - 1,
            u64::MAX,
        ];
        for n in sequence {
            let mut key = b"order\0q\0".to_vec();
            key.extend_from_slice(&n.to_be_bytes());
            keys.push(key);
        }

        // Written in a scrambled order, one batch per key and one batch for several.
        let mut scrambled = keys.clone();
        scrambled.reverse();
        let (singles, together) = scrambled.split_at(scrambled.len() / 2);
        for key in singles
            .iter()
            .step_by(2)
            .chain(singles.iter().skip(1).step_by(2))
        {
            self.put(key, &value_of(key), case).await;
        }
        let mut batch = Batch::new();
        for key in together.iter().rev() {
            batch.put(key.as_slice(), value_of(key));
        }
        self.write(batch, case).await;

        keys.sort();
        let under = |prefix: &[u8]| -> Pairs {
            keys.iter()
                .filter(|k| k.starts_with(prefix))
                .map(|k| (k.clone(), value_of(k)))
                .collect()
        };
        for prefix in [
            b"order".as_slice(),
            b"order\0",
            b"order\0a",
            b"order\0a\0",
            b"order\0\xff",
            b"order\0\xff\xff",
            b"order\0q\0",
            b"orderly",
            b"order\0zzz",
        ] {
            self.expect_scan(prefix, &under(prefix), case).await;
        }

        // The sequence numbers come back in numeric order.
        let found = self.scan(b"order\0q\0", case).await;
        let numbers: Vec<u64> = found
            .iter()
            .filter_map(|(k, _)| k.strip_prefix(b"order\0q\0".as_slice()))
            .filter_map(|suffix| suffix.try_into().ok().map(u64::from_be_bytes))
            .collect();
        assert!(
            numbers == sequence,
            "[{}] big-endian u64 suffixes must scan in numeric order: got {numbers:?}",
            self.name
        );
    }

    async fn scan_high_bytes(&self) {
        let case = "prefixes of 0xff bytes";
        let keys: [&[u8]; 5] = [
            b"\xfe\xff",
            b"\xff",
            b"\xff\x00",
            b"\xff\xff",
            b"\xff\xff\x01",
        ];
        let mut batch = Batch::new();
        for key in keys {
            batch.put(key, key);
        }
        self.write(batch, case).await;
        let pairs = |keys: &[&[u8]]| -> Pairs { keys.iter().map(|k| pair(k, k)).collect() };
        self.expect_scan(
            b"\xff",
            &pairs(&[b"\xff", b"\xff\x00", b"\xff\xff", b"\xff\xff\x01"]),
            case,
        )
        .await;
        self.expect_scan(b"\xff\xff", &pairs(&[b"\xff\xff", b"\xff\xff\x01"]), case)
            .await;
        self.expect_scan(b"\xfe", &pairs(&[b"\xfe\xff"]), case)
            .await;

        let mut batch = Batch::new();
        batch.delete_prefix(b"\xff\xff".as_slice());
        self.write(batch, "DeletePrefix(\"\\xff\\xff\")").await;
        self.expect_scan(
            b"\xfe",
            &pairs(&[b"\xfe\xff"]),
            "DeletePrefix(\"\\xff\\xff\") keeps \"\\xfe\\xff\"",
        )
        .await;
        self.expect_scan(
            b"\xff",
            &pairs(&[b"\xff", b"\xff\x00"]),
            "DeletePrefix(\"\\xff\\xff\")",
        )
        .await;
    }

    async fn batch_order(&self) {
        // DeletePrefix then Put under the same prefix keeps the new key.
        let case = "batch: DeletePrefix then Put";
        let mut batch = Batch::new();
        batch.put(b"bo\0s\0old1".as_slice(), b"old".as_slice());
        batch.put(b"bo\0s\0old2".as_slice(), b"old".as_slice());
        batch.put(b"bo\0sibling".as_slice(), b"stays".as_slice());
        self.write(batch, case).await;
        let mut batch = Batch::new();
        batch.delete_prefix(b"bo\0s\0".as_slice());
        batch.put(b"bo\0s\0new".as_slice(), b"new".as_slice());
        self.write(batch, case).await;
        self.expect_scan(b"bo\0s\0", &[pair(b"bo\0s\0new", b"new")], case)
            .await;
        self.expect(b"bo\0sibling", Some(b"stays"), case).await;

        // A key put and deleted in one batch is absent; deleted and put again, present.
        let case = "batch: Put then Delete of the same key";
        let mut batch = Batch::new();
        batch.put(b"bo\0pd".as_slice(), b"1".as_slice());
        batch.delete(b"bo\0pd".as_slice());
        batch.put(b"bo\0dp".as_slice(), b"1".as_slice());
        batch.delete(b"bo\0dp".as_slice());
        batch.put(b"bo\0dp".as_slice(), b"2".as_slice());
        self.write(batch, case).await;
        self.expect(b"bo\0pd", None, case).await;
        self.expect(
            b"bo\0dp",
            Some(b"2"),
            "batch: Put, Delete, Put of the same key",
        )
        .await;

        // The last of several puts wins.
        let case = "batch: Put twice";
        let mut batch = Batch::new();
        batch.put(b"bo\0pp".as_slice(), b"first".as_slice());
        batch.put(b"bo\0pp".as_slice(), b"second".as_slice());
        self.write(batch, case).await;
        self.expect(b"bo\0pp", Some(b"second"), case).await;

        // A put followed by a DeletePrefix over it is gone, with the keys already there.
        let case = "batch: Put then DeletePrefix";
        self.put(b"bo\0x\0before", b"1", case).await;
        let mut batch = Batch::new();
        batch.put(b"bo\0x\0in batch".as_slice(), b"1".as_slice());
        batch.delete_prefix(b"bo\0x\0".as_slice());
        batch.put(b"bo\0y".as_slice(), b"kept".as_slice());
        self.write(batch, case).await;
        self.expect_scan(b"bo\0x\0", &[], case).await;
        self.expect(b"bo\0y", Some(b"kept"), case).await;

        // DeletePrefix, Put, DeletePrefix: empty again.
        let case = "batch: DeletePrefix, Put, DeletePrefix";
        let mut batch = Batch::new();
        batch.delete_prefix(b"bo\0z\0".as_slice());
        batch.put(b"bo\0z\0k".as_slice(), b"1".as_slice());
        batch.delete_prefix(b"bo\0z\0".as_slice());
        self.write(batch, case).await;
        self.expect_scan(b"bo\0z\0", &[], case).await;

        self.expect_scan(
            b"bo\0",
            &[
                pair(b"bo\0dp", b"2"),
                pair(b"bo\0pp", b"second"),
                pair(b"bo\0s\0new", b"new"),
                pair(b"bo\0sibling", b"stays"),
                pair(b"bo\0y", b"kept"),
            ],
            "batch: everything under \"bo\\0\"",
        )
        .await;
    }

    async fn empty_batch(&self) {
        let case = "empty batch";
        let before = self.scan(b"", case).await;
        self.write(Batch::new(), case).await;
        let after = self.scan(b"", case).await;
        self.same_pairs(&after, &before, "the store after an empty batch");
    }

    async fn empty_values(&self) {
        let case = "empty value";
        self.put(b"ev\0empty", b"", case).await;
        self.expect(
            b"ev\0empty",
            Some(b""),
            "an empty value is present, not absent",
        )
        .await;
        self.expect_scan(b"ev\0", &[pair(b"ev\0empty", b"")], case)
            .await;
        self.put(b"ev\0empty", b"now something", case).await;
        self.put(b"ev\0empty", b"", case).await;
        self.expect(b"ev\0empty", Some(b""), "overwrite with an empty value")
            .await;
    }

    async fn binary(&self) {
        let case = "binary keys and values";
        let every_byte: Vec<u8> = (0..=255).collect();
        let mut key = b"bin\0".to_vec();
        key.extend_from_slice(&every_byte);
        let mut reversed = every_byte.clone();
        reversed.reverse();
        let mut batch = Batch::new();
        batch.put(key.as_slice(), every_byte.as_slice());
        batch.put(b"bin\0crlf".as_slice(), b"\r\n\0\r\n\xff\0".as_slice());
        batch.put(b"bin\0rev".as_slice(), reversed.as_slice());
        batch.put(
            b"bin\0utf8".as_slice(),
            "h\u{e9}\u{2603}\u{1f600}".as_bytes(),
        );
        self.write(batch, case).await;
        self.expect(&key, Some(&every_byte), case).await;
        self.expect(b"bin\0crlf", Some(b"\r\n\0\r\n\xff\0"), case)
            .await;
        self.expect(b"bin\0rev", Some(&reversed), case).await;
        let mut expected = vec![
            (key.clone(), every_byte.clone()),
            pair(b"bin\0crlf", b"\r\n\0\r\n\xff\0"),
            pair(b"bin\0rev", &reversed),
            pair(b"bin\0utf8", "h\u{e9}\u{2603}\u{1f600}".as_bytes()),
        ];
        expected.sort();
        self.expect_scan(b"bin\0", &expected, case).await;
    }

    async fn large_value(&self) {
        let case = "1 MiB value";
        let large: Vec<u8> = (0..1_usize << 20)
            .map(|i| u8::try_from((i * 31 + i / 251) % 256).unwrap_or(0))
            .collect();
        self.put(b"large\0a", &large, case).await;
        let found = self.get(b"large\0a", case).await;
        let length = found.as_ref().map(Vec::len);
        assert!(
            found.as_ref() == Some(&large),
            "[{}] {case}: get returned {length:?} bytes that differ from the {} written",
            self.name,
            large.len(),
        );
        let scanned = self.scan(b"large\0", case).await;
        assert!(
            scanned.len() == 1 && scanned.first().map(|(_, v)| v) == Some(&large),
            "[{}] {case}: scan returned {} pairs, not the one 1 MiB value",
            self.name,
            scanned.len(),
        );
        // Shrinking it leaves nothing of the old bytes.
        self.put(b"large\0b", &large, case).await;
        self.put(b"large\0b", b"small", case).await;
        self.expect(
            b"large\0b",
            Some(b"small"),
            "1 MiB value overwritten by a small one",
        )
        .await;
    }

    async fn many_keys(&self) {
        let case = "10,000 keys in one batch";
        let key = |i: u32| {
            let mut key = b"many\0".to_vec();
            key.extend_from_slice(&i.to_be_bytes());
            key
        };
        let value = |i: u32| format!("value {i}").into_bytes();
        let mut batch = Batch::new();
        // Written in descending order: the scan must sort them.
        for i in (0..10_000).rev() {
            batch.put(key(i), value(i));
        }
        self.write(batch, case).await;
        let expected: Pairs = (0..10_000).map(|i| (key(i), value(i))).collect();
        self.expect_scan(b"many\0", &expected, case).await;
        self.expect(&key(4_321), Some(&value(4_321)), case).await;

        let case = "5,000 deletes in one batch";
        let mut batch = Batch::new();
        for i in (0..10_000).step_by(2) {
            batch.delete(key(i));
        }
        self.write(batch, case).await;
        let expected: Pairs = (0..10_000)
            .filter(|i| i % 2 == 1)
            .map(|i| (key(i), value(i)))
            .collect();
        self.expect_scan(b"many\0", &expected, case).await;

        // Prefixes of three bytes of the four: "many\0\0\0\x04" covers keys 1,024 to 1,279.
        let case = "DeletePrefix of 36 prefixes in one batch";
        let mut batch = Batch::new();
        for third in 4..40_u8 {
            batch.delete_prefix([b"many\0\0\0".as_slice(), &[third]].concat());
        }
        self.write(batch, case).await;
        // The 512 odd keys below 1,024 are left for the restart check.
        let expected: Pairs = (0..1_024)
            .filter(|i| i % 2 == 1)
            .map(|i| (key(i), value(i)))
            .collect();
        self.expect_scan(b"many\0", &expected, case).await;
    }

    async fn concurrent_writes(&self) {
        let case = "concurrent writes";
        let write = |n: u8| {
            let mut batch = Batch::new();
            for i in 0..50_u8 {
                batch.put(vec![b'c', b'w', 0, n, i], vec![n, i]);
            }
            self.backend.write(batch)
        };
        let results = tokio::join!(
            write(0),
            write(1),
            write(2),
            write(3),
            write(4),
            write(5),
            write(6),
            write(7)
        );
        for result in [
            results.0, results.1, results.2, results.3, results.4, results.5, results.6, results.7,
        ] {
            self.ok(result, case);
        }
        let expected: Pairs = (0..8_u8)
            .flat_map(|n| (0..50_u8).map(move |i| (vec![b'c', b'w', 0, n, i], vec![n, i])))
            .collect();
        self.expect_scan(b"cw\0", &expected, case).await;
    }

    async fn writes_after_restart(&self) {
        let case = "write after a restart";
        let mut batch = Batch::new();
        batch.put(b"pg\0one".as_slice(), b"one again".as_slice());
        batch.delete_prefix(b"many\0".as_slice());
        batch.put(b"restart".as_slice(), b"yes".as_slice());
        self.write(batch, case).await;
        self.expect(b"pg\0one", Some(b"one again"), case).await;
        self.expect(b"restart", Some(b"yes"), case).await;
        self.expect_scan(b"many\0", &[], case).await;
    }
}

fn pair(key: &[u8], value: &[u8]) -> (Vec<u8>, Vec<u8>) {
    (key.to_vec(), value.to_vec())
}

/// A value derived from the key, so that a scan that mixes up values is caught.
fn value_of(key: &[u8]) -> Vec<u8> {
    let mut value = b"value of ".to_vec();
    value.extend(key.iter().rev());
    value
}

/// A key for a message: printable ASCII as is, other bytes escaped.
fn show(bytes: &[u8]) -> String {
    let mut shown = String::with_capacity(bytes.len() + 2);
    shown.push('"');
    for &byte in bytes {
        match byte {
            0 => shown.push_str("\\0"),
            b'"' => shown.push_str("\\\""),
            b'\\' => shown.push_str("\\\\"),
            0x20..=0x7e => shown.push(char::from(byte)),
            _ => {
                let _ = write!(shown, "\\x{byte:02x}");
            }
        }
    }
    shown.push('"');
    shown
}

fn show_value(value: Option<&[u8]>) -> String {
    match value {
        None => "nothing".to_owned(),
        Some(value) if value.len() > 64 => format!("{} bytes", value.len()),
        Some(value) => format!("{} ({} bytes)", show(value), value.len()),
    }
}

fn show_keys(keys: &[&[u8]]) -> String {
    const SHOWN: usize = 20;
    let mut shown: Vec<String> = keys.iter().take(SHOWN).map(|k| show(k)).collect();
    if keys.len() > SHOWN {
        shown.push(format!("... {} more", keys.len() - SHOWN));
    }
    format!("[{}]", shown.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_escapes() {
        assert_eq!(show(b"a\0b\xff\"\\"), r#""a\0b\xff\"\\""#);
    }
}
