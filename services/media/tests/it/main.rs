//! Media's job store on each backend: leases that run out and pass to another worker,
//! heartbeats that stop counting once a lease is lost, renditions recorded once, retries
//! with growing waits, and failures for good with their reason and event.

#![allow(clippy::unwrap_used)]

use comb_contracts::media::v1 as proto;
use comb_kit::storage::Database;
use comb_media::MIGRATIONS;
use comb_media::jobs::{JobError, MAX_ATTEMPTS, MediaKind, MediaStore, NewAsset};
use comb_testkit::{TestDatabase, on_each_backend};

async fn store(database: &TestDatabase) -> MediaStore {
    MediaStore::new(Database::open(&database.url, &MIGRATIONS).await.unwrap())
}

fn video() -> NewAsset {
    NewAsset {
        product_id: "p-1".into(),
        kind: MediaKind::Video,
        origin: "upload",
        file_name: "clip.mp4".into(),
        master_sha256: "a".repeat(64),
        master_type: "video/mp4".into(),
        master_bytes: 1_000,
    }
}

fn rendition(name: &str) -> proto::Rendition {
    proto::Rendition {
        name: name.into(),
        content_type: "video/mp4".into(),
        bytes: 10,
        sha256: "b".repeat(64),
        public: true,
        ..proto::Rendition::default()
    }
}

const LEASE: i64 = 1_000;

async fn events(store: &MediaStore) -> Vec<String> {
    comb_kit::events::read_outbox(store.database(), "media", 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|event| event.kind)
        .collect()
}

async fn a_lease_that_runs_out_passes_to_the_next_worker(database: TestDatabase) {
    let store = store(&database).await;
    let job = store.add_upload(&video(), 0).await.unwrap();
    let first = store.lease("worker-a", LEASE, 10).await.unwrap().unwrap();
    assert_eq!(first.id, job.id);
    assert_eq!(first.attempt, 1);
    assert!(
        store.lease("worker-b", LEASE, 20).await.unwrap().is_none(),
        "held"
    );
    assert!(
        store
            .heartbeat(&job.id, &first.lease, 40, LEASE, 500)
            .await
            .unwrap()
    );
    // Renewed at 500: still held at 1 400, gone at 1 600.
    assert!(
        store
            .lease("worker-b", LEASE, 1_400)
            .await
            .unwrap()
            .is_none()
    );
    let second = store
        .lease("worker-b", LEASE, 1_600)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.attempt, 2);
    assert!(
        !store
            .heartbeat(&job.id, &first.lease, 90, LEASE, 1_700)
            .await
            .unwrap(),
        "the first lease is lost"
    );
    let late = store
        .complete(&job.id, &first.lease, &[rendition("360p.mp4")], 1_800)
        .await;
    assert!(matches!(late, Err(JobError::LeaseLost(_))), "{late:?}");
    let done = store
        .complete(
            &job.id,
            &second.lease,
            &[rendition("360p.mp4"), rendition("poster.jpg")],
            1_900,
        )
        .await
        .unwrap();
    assert_eq!(done.state(), proto::JobState::Done);
    assert_eq!(done.attempts, 2);
    assert_eq!(done.duration_ms, 1_890);
    let again = store
        .complete(&job.id, &second.lease, &[rendition("360p.mp4")], 2_000)
        .await;
    assert!(
        matches!(again, Err(JobError::LeaseLost(_))),
        "a done job takes no second completion"
    );
    assert!(
        store
            .rendition(&job.asset_id, "poster.jpg")
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        events(&store).await,
        ["comb.media.uploaded", "comb.media.ready"]
    );
}

async fn a_failure_is_retried_with_growing_waits_then_fails_for_good(database: TestDatabase) {
    let store = store(&database).await;
    let job = store.add_upload(&video(), 0).await.unwrap();
    let mut now = 0;
    let mut waits = Vec::new();
    for attempt in 1..=MAX_ATTEMPTS {
        let leased = loop {
            if let Some(leased) = store.lease("w", LEASE, now).await.unwrap() {
                break leased;
            }
            now += 100;
        };
        assert_eq!(leased.attempt, attempt);
        let failed = store
            .fail(&job.id, &leased.lease, "ffmpeg was killed", true, 100, now)
            .await
            .unwrap();
        waits.push(now);
        if attempt < MAX_ATTEMPTS {
            assert_eq!(failed.state(), proto::JobState::Queued);
            assert_eq!(failed.failure, "ffmpeg was killed");
        } else {
            assert_eq!(failed.state(), proto::JobState::Failed);
        }
    }
    assert!(
        waits[2] - waits[1] > waits[1] - waits[0],
        "waits grow: {waits:?}"
    );
    assert!(
        store
            .lease("w", LEASE, now + 1_000_000)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(events(&store).await.last().unwrap(), "comb.media.failed");
    let retried = store.retry(&job.id, now).await.unwrap();
    assert_eq!(
        (retried.state(), retried.attempts),
        (proto::JobState::Queued, 0)
    );
}

async fn an_undecodable_input_fails_at_once(database: TestDatabase) {
    let store = store(&database).await;
    let job = store.add_upload(&video(), 0).await.unwrap();
    let leased = store.lease("w", LEASE, 0).await.unwrap().unwrap();
    let failed = store
        .fail(
            &job.id,
            &leased.lease,
            "the file cannot be decoded: Invalid data",
            false,
            100,
            1,
        )
        .await
        .unwrap();
    assert_eq!(failed.state(), proto::JobState::Failed);
    assert_eq!(failed.attempts, 1);
}

async fn a_worker_that_keeps_vanishing_fails_the_job_with_that_reason(database: TestDatabase) {
    let store = store(&database).await;
    let job = store.add_upload(&video(), 0).await.unwrap();
    let mut now = 0;
    for _ in 0..MAX_ATTEMPTS {
        store.lease("w", LEASE, now).await.unwrap().unwrap();
        now += LEASE + 1;
    }
    assert!(store.lease("w", LEASE, now).await.unwrap().is_none());
    let failed = store.job(&job.id).await.unwrap();
    assert_eq!(failed.state(), proto::JobState::Failed);
    assert!(
        failed.failure.contains("stopped answering"),
        "{}",
        failed.failure
    );
}

async fn a_cancelled_job_stops_its_worker_and_can_be_retried(database: TestDatabase) {
    let store = store(&database).await;
    let job = store.add_upload(&video(), 0).await.unwrap();
    let leased = store.lease("w", LEASE, 0).await.unwrap().unwrap();
    let cancelled = store.cancel(&job.id, 10).await.unwrap();
    assert_eq!(cancelled.state(), proto::JobState::Cancelled);
    assert!(
        !store
            .heartbeat(&job.id, &leased.lease, 50, LEASE, 20)
            .await
            .unwrap()
    );
    assert!(store.lease("w", LEASE, 5_000).await.unwrap().is_none());
    let done = store
        .complete(&job.id, &leased.lease, &[rendition("a.mp4")], 30)
        .await;
    assert!(matches!(done, Err(JobError::LeaseLost(_))));
    assert!(matches!(
        store
            .retry(&store.add_upload(&video(), 0).await.unwrap().id, 40)
            .await,
        Err(JobError::WrongState { .. })
    ));
    assert_eq!(
        store.retry(&job.id, 50).await.unwrap().state(),
        proto::JobState::Queued
    );
}

async fn stats_count_jobs_and_stored_bytes(database: TestDatabase) {
    let store = store(&database).await;
    store.add_upload(&video(), 0).await.unwrap();
    let job = store.add_upload(&video(), 0).await.unwrap();
    let leased = store.lease("w", LEASE, 0).await.unwrap().unwrap();
    assert_eq!(
        leased.id,
        store.jobs(None, 10).await.unwrap().last().unwrap().id
    );
    store
        .complete(&leased.id, &leased.lease, &[rendition("360p.mp4")], 5)
        .await
        .unwrap();
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.queued, stats.running, stats.done), (1, 0, 1));
    assert_eq!(stats.bytes_stored, 2_000 + 10);
    assert_eq!(
        store
            .jobs(Some(comb_media::jobs::JobState::Queued), 10)
            .await
            .unwrap()[0]
            .id,
        job.id
    );
}

async fn workers_leasing_at_once_never_share_a_job(database: TestDatabase) {
    let store = store(&database).await;
    for _ in 0..20 {
        store.add_upload(&video(), 0).await.unwrap();
    }
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..6 {
        let store = store.clone();
        workers.spawn(async move {
            let mut leased = Vec::new();
            while let Some(job) = store.lease(&format!("w{worker}"), 60_000, 1).await.unwrap() {
                leased.push(job.id);
            }
            leased
        });
    }
    let mut all = Vec::new();
    while let Some(leased) = workers.join_next().await {
        all.extend(leased.unwrap());
    }
    let count = all.len();
    all.sort();
    all.dedup();
    assert_eq!((count, all.len()), (20, 20), "each job leased once");
}

on_each_backend!(
    workers_leasing_at_once_never_share_a_job,
    a_lease_that_runs_out_passes_to_the_next_worker,
    a_failure_is_retried_with_growing_waits_then_fails_for_good,
    an_undecodable_input_fails_at_once,
    a_worker_that_keeps_vanishing_fails_the_job_with_that_reason,
    a_cancelled_job_stops_its_worker_and_can_be_retried,
    stats_count_jobs_and_stored_bytes,
);

#[tokio::test]
async fn files_in_an_s3_bucket_are_named_by_their_digest_and_read_by_range() {
    use comb_media::blobs::{Blobs, S3Options};
    use futures_util::StreamExt;
    let Some(bucket) = comb_testkit::TestBucket::start().await else {
        return;
    };
    let options = S3Options {
        endpoint: Some(bucket.endpoint.clone()),
        region: Some("us-east-1".into()),
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
    };
    let blobs = Blobs::open(&bucket.location("blobs"), &options).unwrap();
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let stored = blobs.put(&bytes).await.unwrap();
    assert_eq!(stored.bytes, 200_000);
    assert_eq!(
        blobs.put(&bytes).await.unwrap(),
        stored,
        "the same bytes, the same file"
    );
    assert_eq!(blobs.size(&stored.sha256).await.unwrap(), Some(200_000));
    assert_eq!(blobs.size(&"0".repeat(64)).await.unwrap(), None);
    let mut read = Vec::new();
    let mut chunks = blobs.read(&stored.sha256, 1_000..1_010).await.unwrap();
    while let Some(chunk) = chunks.next().await {
        read.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(read, bytes[1_000..1_010]);
}
