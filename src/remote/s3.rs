//! A remote in S3-compatible object storage (`s3://bucket/prefix`), through the `object_store`
//! crate. Endpoint, region and credentials come from the standard `AWS_*` variables
//! (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`;
//! `AWS_ALLOW_HTTP=true` for a plain-http endpoint). A create-only write is a conditional put
//! (`If-None-Match: *`): the server answers 412 when the object exists.
//!
//! `object_store` is async; its tokio runtime lives here, behind the synchronous [`Remote`]
//! trait: each call blocks its thread on the runtime (several threads may call at once, and the
//! runtime's two workers drive their connections).

use super::{Meta, RResult, Remote, RemoteError};
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as OPath;
use object_store::{
    BackoffConfig, ClientConfigKey, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    RetryConfig,
};
use std::io::Write;
use std::time::Duration;

pub struct S3Remote {
    url: String,
    prefix: String,
    store: AmazonS3,
    rt: tokio::runtime::Runtime,
}

/// An error's text, bounded (a server's body can be long).
fn text(e: impl std::fmt::Display) -> String {
    let s = e.to_string();
    match s.char_indices().nth(400) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

impl S3Remote {
    /// `rest`: `bucket/prefix` (the URL without `s3://`).
    pub fn open(url: &str, rest: &str) -> anyhow::Result<Self> {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            anyhow::bail!("remote `{url}` names no bucket: give s3://bucket or s3://bucket/prefix");
        }
        let prefix = prefix.trim_matches('/').to_string();
        if prefix.split('/').any(|p| p == "." || p == "..") {
            anyhow::bail!("remote `{url}`: a prefix of `.` or `..` parts names no folder");
        }
        let store = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                "5s",
            )
            .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), "300s")
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 2,
                retry_timeout: Duration::from_secs(20),
            })
            .build()
            .map_err(|e| anyhow::anyhow!("remote `{url}`: {}", text(e)))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("seqpipe-s3")
            .enable_all()
            .build()?;
        Ok(S3Remote {
            url: url.to_string(),
            prefix,
            store,
            rt,
        })
    }

    fn path(&self, p: &str) -> OPath {
        if self.prefix.is_empty() {
            OPath::from(p)
        } else {
            OPath::from(format!("{}/{p}", self.prefix))
        }
    }

    fn fail(&self, what: &str, p: &str, e: object_store::Error) -> RemoteError {
        RemoteError::Failed(format!("{what} {p}: {}", text(e)))
    }
}

impl Remote for S3Remote {
    fn url(&self) -> &str {
        &self.url
    }

    fn get(&self, path: &str, max: u64, sink: &mut dyn Write) -> RResult<Option<u64>> {
        let loc = self.path(path);
        self.rt.block_on(async {
            let r = match self.store.get(&loc).await {
                Ok(r) => r,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(self.fail("reading", path, e)),
            };
            if r.meta.size > max {
                return Err(RemoteError::TooBig(path.to_string(), max));
            }
            let mut n = 0u64;
            let mut s = r.into_stream();
            while let Some(chunk) = s.next().await {
                let chunk = chunk.map_err(|e| self.fail("reading", path, e))?;
                n += chunk.len() as u64;
                if n > max {
                    return Err(RemoteError::TooBig(path.to_string(), max));
                }
                sink.write_all(&chunk)
                    .map_err(|e| RemoteError::Failed(format!("writing {path} here: {e}")))?;
            }
            Ok(Some(n))
        })
    }

    fn head(&self, path: &str) -> RResult<Option<Meta>> {
        let loc = self.path(path);
        self.rt.block_on(async {
            match self.store.head(&loc).await {
                Ok(m) => Ok(Some(Meta {
                    size: m.size,
                    modified: m.last_modified.into(),
                })),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.fail("looking up", path, e)),
            }
        })
    }

    fn put(&self, path: &str, bytes: Vec<u8>, create_only: bool) -> RResult<bool> {
        let loc = self.path(path);
        let opts = PutOptions {
            mode: if create_only {
                PutMode::Create
            } else {
                PutMode::Overwrite
            },
            ..Default::default()
        };
        self.rt.block_on(async {
            match self
                .store
                .put_opts(&loc, PutPayload::from(bytes), opts)
                .await
            {
                Ok(_) => Ok(true),
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) if create_only => Ok(false),
                Err(e) => Err(self.fail("writing", path, e)),
            }
        })
    }

    fn list(&self, prefix: &str) -> RResult<Vec<(String, Meta)>> {
        let loc = self.path(prefix.trim_end_matches('/'));
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        self.rt.block_on(async {
            let mut out = Vec::new();
            let mut s = self.store.list(Some(&loc));
            while let Some(m) = s.next().await {
                let m = m.map_err(|e| self.fail("listing", prefix, e))?;
                let full = m.location.to_string();
                if let Some(rel) = full.strip_prefix(&strip) {
                    out.push((
                        rel.to_string(),
                        Meta {
                            size: m.size,
                            modified: m.last_modified.into(),
                        },
                    ));
                }
            }
            out.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(out)
        })
    }

    fn delete(&self, path: &str) -> RResult<()> {
        let loc = self.path(path);
        self.rt.block_on(async {
            match self.store.delete(&loc).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.fail("removing", path, e)),
            }
        })
    }
}
