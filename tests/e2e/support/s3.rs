//! A real S3 server for the recording tests: `s3s-fs` (crates.io; `scripts/test` installs the
//! pinned version) on a free loopback port with its own keys, storing a bucket in a temporary
//! directory; read back through the S3 API with the object_store crate. Killed when dropped.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::process::{Child, Command};

pub const BUCKET: &str = "recordings";
const ACCESS_KEY: &str = "junction-e2e";
const SECRET_KEY: &str = "junction-e2e-secret-key";

pub struct S3Server {
    pub port: u16,
    _root: tempfile::TempDir,
    _child: Child,
}

impl S3Server {
    pub async fn start() -> S3Server {
        let root = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(root.path().join(BUCKET)).expect("the bucket's directory");
        let port = super::sip::free_port();
        let child = Command::new("s3s-fs")
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("s3s-fs (cargo install --locked s3s-fs@0.14.1 --features binary) must be installed");
        let addr = format!("127.0.0.1:{port}");
        super::eventually("s3s-fs accepting connections", Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(&addr).await.ok().map(|_| ())
        })
        .await;
        S3Server { port, _root: root, _child: child }
    }

    /// The server's `[recording.s3]` section, keys under `prefix`.
    pub fn config(&self, prefix: &str) -> String {
        format!(
            "[recording.s3]\nbucket = \"{BUCKET}\"\nendpoint = \"http://127.0.0.1:{}\"\naccess_key_id = \"{ACCESS_KEY}\"\n\
             secret_access_key = \"{SECRET_KEY}\"\nprefix = \"{prefix}\"\n",
            self.port
        )
    }

    fn store(&self) -> Arc<dyn ObjectStore> {
        let store = AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_endpoint(format!("http://127.0.0.1:{}", self.port))
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .build()
            .expect("an S3 client");
        Arc::new(store)
    }

    /// The object at `key`, if there is one.
    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        let object = self.store().get(&ObjectPath::from(key)).await.ok()?;
        Some(object.bytes().await.ok()?.to_vec())
    }
}
