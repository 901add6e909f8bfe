//! Copies a recording's files to S3-compatible storage (`[recording.s3]`, through the
//! object_store crate): each file once it is closed, streamed from disk (a multipart upload
//! past a few MiB, so memory stays bounded), then the manifest. One task per recording does the
//! copies in order; the recording hears back which finished and marks them in its manifest
//! (`"object"`), so a restarted recording copies what a crash left behind.

use std::path::PathBuf;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Copies queued at once per recording; more wait in the recording (its files stay on disk).
const QUEUE: usize = 256;

/// The `[recording.s3]` section: where finished recordings are copied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    /// The S3 endpoint (`http://127.0.0.1:9000` for MinIO and the like); AWS when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    /// Credentials; absent: the environment's (`AWS_ACCESS_KEY_ID`, …, instance metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
    /// Prepended to every key: `<prefix><room>/<component id>/<file>`.
    #[serde(default)]
    pub prefix: String,
    /// Keep the files on disk once copied [true].
    #[serde(default = "yes")]
    pub keep_local: bool,
}

fn default_region() -> String {
    "us-east-1".into()
}

fn yes() -> bool {
    true
}

impl S3Config {
    /// The object store it names; an error says which setting is wrong.
    pub fn store(&self) -> Result<Arc<dyn ObjectStore>, String> {
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(&self.bucket).with_region(&self.region);
        if let Some(endpoint) = &self.endpoint {
            // A self-hosted endpoint is addressed path-style (`<endpoint>/<bucket>/<key>`).
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        if let (Some(id), Some(secret)) = (&self.access_key_id, &self.secret_access_key) {
            builder = builder.with_access_key_id(id).with_secret_access_key(secret);
        }
        builder.build().map(|store| Arc::new(store) as Arc<dyn ObjectStore>).map_err(|e| format!("recording.s3: {e}"))
    }
}

/// A copy to make: a local file (an index in the manifest) or the manifest itself (`None`).
#[derive(Debug)]
pub struct Job {
    pub index: Option<usize>,
    pub path: PathBuf,
    pub key: String,
}

/// How a copy went.
#[derive(Debug)]
pub struct Done {
    pub index: Option<usize>,
    pub key: String,
    pub result: Result<(), String>,
}

/// The copying task of one recording.
pub struct Uploads {
    jobs: mpsc::Sender<Job>,
    pub done: mpsc::Receiver<Done>,
    task: tokio::task::JoinHandle<()>,
}

impl Uploads {
    pub fn start(store: Arc<dyn ObjectStore>, keep_local: bool) -> Uploads {
        let (jobs, mut queue) = mpsc::channel::<Job>(QUEUE);
        let (report, done) = mpsc::channel(QUEUE);
        let task = tokio::spawn(async move {
            while let Some(job) = queue.recv().await {
                let result = copy(&store, &job).await;
                match &result {
                    Ok(()) => {
                        debug!(key = %job.key, "copied to object storage");
                        if !keep_local && job.index.is_some() {
                            let _ = tokio::fs::remove_file(&job.path).await;
                        }
                    }
                    Err(err) => warn!(key = %job.key, "cannot copy a recording file to object storage: {err}"),
                }
                if report.send(Done { index: job.index, key: job.key, result }).await.is_err() {
                    break;
                }
            }
        });
        Uploads { jobs, done, task }
    }

    /// Queues a copy; false when the queue is full (the file stays on disk, and a restarted
    /// recording copies it).
    pub fn queue(&self, job: Job) -> bool {
        self.jobs.try_send(job).is_ok()
    }

    /// Lets the queued copies finish, for at most `patience`; how each went.
    pub async fn finish(self, patience: std::time::Duration) -> Vec<Done> {
        let Uploads { jobs, mut done, task } = self;
        drop(jobs);
        let mut finished = Vec::new();
        let drained = tokio::time::timeout(patience, async {
            while let Some(report) = done.recv().await {
                finished.push(report);
            }
        })
        .await;
        if drained.is_err() {
            warn!("recording copies to object storage did not finish in {patience:?}; the files stay on disk");
            task.abort();
        }
        finished
    }
}

pub async fn copy(store: &Arc<dyn ObjectStore>, job: &Job) -> Result<(), String> {
    let mut file = tokio::fs::File::open(&job.path).await.map_err(|e| format!("{}: {e}", job.path.display()))?;
    let mut writer = BufWriter::new(store.clone(), object_store::path::Path::from(job.key.as_str()));
    if let Err(err) = tokio::io::copy(&mut file, &mut writer).await {
        let _ = writer.abort().await;
        return Err(err.to_string());
    }
    writer.shutdown().await.map_err(|e| e.to_string())
}
