//! A conformance suite for the body store ([`BlobStore`]), run on every backend: a local
//! directory and an S3 bucket ([`crate::servers::SeaweedS3`]) get the same checks, so that the
//! mailbox service, which only sees a `BlobStore`, behaves the same on both.
//!
//! [`conformance`] covers what the service relies on: a body reads back byte for byte right
//! after its put, range reads (the start, the middle, the end, and ranges that run past the
//! end), putting an existing body again, a body large enough for a multipart upload, and
//! deletion, also of a body that is not there. It returns the ids it stored, so a caller can
//! look at the backend itself (the objects in the bucket).

use bytes::Bytes;
use tern_mailbox::blobs::{BlobStore, MULTIPART_PART_BYTES, MULTIPART_THRESHOLD, blob_id};

/// The size of the body that goes through a multipart upload.
pub const LARGE_BODY: usize = 20 * 1024 * 1024;
const _: () = assert!(LARGE_BODY > MULTIPART_THRESHOLD, "the large body must be uploaded in parts");

/// What [`conformance`] left in the store.
#[derive(Debug)]
pub struct Stored {
    /// A small body that is still stored.
    pub small: (String, Bytes),
    /// The [`LARGE_BODY`]-byte body, stored with a multipart upload, still stored.
    pub large: (String, Bytes),
}

/// `len` bytes that differ from one position to the next and from one `seed` to another, so
/// that a misplaced range or a mixed-up body shows. Every byte value occurs.
pub fn pattern(len: usize, seed: u64) -> Bytes {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            // xorshift64: cheap, and good enough to make every 8 MiB part different.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

/// Stores `body` and returns its id, checking that it reads back at once.
async fn put_and_read_back(store: &BlobStore, body: &Bytes, what: &str) -> String {
    let id = blob_id(body);
    store.put(&id, body.clone()).await.unwrap_or_else(|e| panic!("put {what}: {e}"));
    assert!(store.exists(&id).await.unwrap_or_else(|e| panic!("exists {what}: {e}")), "{what} missing after put");
    let got = store.get(&id).await.unwrap_or_else(|e| panic!("get {what} right after its put: {e}"));
    assert!(got == *body, "{what} read back differently ({} bytes stored, {} read)", body.len(), got.len());
    id
}

/// Reads `start..end` of `id` and compares it with the same range of `body`, cut at its end.
async fn assert_range(store: &BlobStore, id: &str, body: &Bytes, start: u64, end: u64) {
    let got = store.get_range(id, start, end).await.unwrap_or_else(|e| panic!("range {start}..{end}: {e}"));
    let len = body.len() as u64;
    let want = body.slice(start.min(len) as usize..end.min(len) as usize);
    assert!(got == want, "range {start}..{end} of a {len}-byte body: {} bytes, wanted {}", got.len(), want.len());
}

/// The checks every backend must pass. `store` must have its read cache off, so that every read
/// reaches the backend; the suite turns the cache on at the end to check that cached reads
/// agree.
pub async fn conformance(store: &BlobStore) -> Stored {
    // Round trips, read right after the put: text with CRLF, every byte value, the empty body.
    let text = Bytes::from_static(b"Subject: conformance\r\n\r\nA body with a bare \n and a bare \r in it.\r\n");
    let small_id = put_and_read_back(store, &text, "a text body").await;
    put_and_read_back(store, &pattern(70_001, 1), "a binary body").await;
    put_and_read_back(store, &Bytes::new(), "the empty body").await;

    // Range reads on a body of a few hundred KiB: the start, the middle, the end, a range that
    // runs past the end, ranges that start at or after the end, and an empty range.
    let body = pattern(300_007, 2);
    let id = put_and_read_back(store, &body, "the range body").await;
    let len = body.len() as u64;
    for (start, end) in [
        (0, 1),
        (0, 4096),
        (100_000, 100_123),
        (len - 17, len),
        (len - 17, len + 1000),
        (1, u64::MAX),
        (len, len + 5),
        (len + 100, len + 200),
        (5000, 5000),
    ] {
        assert_range(store, &id, &body, start, end).await;
    }

    // Putting a body that exists is not an error, and changes nothing.
    store.put(&id, body.clone()).await.expect("put an existing body again");
    assert!(store.get(&id).await.expect("get after the second put") == body, "the second put changed the body");

    // A body over the threshold goes through a multipart upload; ranges across part
    // boundaries and at the end read back.
    let large = pattern(LARGE_BODY, 3);
    let large_id = put_and_read_back(store, &large, "the 20 MiB body").await;
    let part = MULTIPART_PART_BYTES as u64;
    let large_len = large.len() as u64;
    for (start, end) in [(part - 10, part + 10), (2 * part - 1, 2 * part + 1), (large_len - 100, large_len + 100)] {
        assert_range(store, &large_id, &large, start, end).await;
    }
    store.put(&large_id, large.clone()).await.expect("put the large body again");

    // Deletion, then deleting what is not there (again, and an id never stored).
    let doomed = pattern(1000, 4);
    let doomed_id = put_and_read_back(store, &doomed, "a body to delete").await;
    store.delete(&doomed_id).await.expect("delete a body");
    assert!(!store.exists(&doomed_id).await.expect("exists after delete"), "the body is still there after delete");
    assert!(store.get(&doomed_id).await.is_err(), "a deleted body still reads");
    store.delete(&doomed_id).await.expect("delete a body that was deleted");
    store.delete(&blob_id(b"never stored")).await.expect("delete a body that never was");

    // With the cache on, whole and range reads of a small body agree with the backend's.
    let cached = store.clone().with_read_cache(1024 * 1024);
    for _ in 0..2 {
        assert!(cached.get(&id).await.expect("cached get") == body, "a cached read differs");
        for (start, end) in [(0, 10), (len - 17, len + 1000), (len, len + 5)] {
            assert_range(&cached, &id, &body, start, end).await;
        }
    }

    Stored { small: (small_id, text), large: (large_id, large) }
}
