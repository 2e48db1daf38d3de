//! The bucket: uploads (one PUT up to `s3.part.size`, a multipart upload beyond it, aborted
//! when it fails), the abort of multipart uploads a killed task left behind, and retries.
//! Errors are classified for the worker: the bucket missing or access refused is fatal (it
//! will not fix itself), a 5xx, 408, 429 or a connection that failed is retriable.

use std::time::Duration;

use s3::creds::Credentials;
use s3::error::S3Error;
use s3::{Bucket, Region};
use sluice_connector_sdk::{Config, TaskError};

pub const BUCKET: &str = "s3.bucket.name";
pub const REGION: &str = "s3.region";
pub const STORE_URL: &str = "store.url";
pub const PATH_STYLE: &str = "s3.path.style.access.enabled";
pub const ACCESS_KEY: &str = "aws.access.key.id";
pub const SECRET_KEY: &str = "aws.secret.access.key";
pub const PART_SIZE: &str = "s3.part.size";
pub const RETRIES: &str = "s3.part.retries";
pub const BACKOFF: &str = "s3.retry.backoff.ms";

/// S3's smallest part (but the last).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;

pub struct Store {
    bucket: Box<Bucket>,
    name: String,
    part_size: usize,
    retries: u32,
    backoff: Duration,
}

impl Store {
    pub fn from_config(config: &Config) -> Result<Store, TaskError> {
        let name = config.required(BUCKET)?.trim().to_string();
        let region_name = config.get_or(REGION, "us-west-2").trim().to_string();
        let region = match config
            .get(STORE_URL)
            .map(str::trim)
            .filter(|u| !u.is_empty())
        {
            Some(endpoint) => Region::Custom {
                region: region_name,
                endpoint: endpoint.trim_end_matches('/').to_string(),
            },
            None => region_name
                .parse::<Region>()
                .map_err(|e| TaskError::fatal(format!("{REGION}: {e}")))?,
        };
        let credentials = match (config.get(ACCESS_KEY), config.get(SECRET_KEY)) {
            (Some(key), Some(secret)) if !key.is_empty() => {
                Credentials::new(Some(key), Some(secret), None, None, None)
            }
            (Some(key), None) if !key.is_empty() => {
                return Err(TaskError::fatal(format!(
                    "{ACCESS_KEY} is set but {SECRET_KEY} is not"
                )))
            }
            // The environment (AWS_ACCESS_KEY_ID, ...) or the shared credentials file.
            _ => Credentials::default(),
        }
        .map_err(|e| TaskError::fatal(format!("AWS credentials: {e}")))?;
        let mut bucket = Bucket::new(&name, region, credentials)
            .map_err(|e| TaskError::fatal(format!("bucket {name:?}: {e}")))?;
        if config.parse_or(PATH_STYLE, true)? {
            bucket = bucket.with_path_style();
        }
        let bucket = bucket
            .with_request_timeout(Duration::from_secs(60))
            .map_err(|e| TaskError::fatal(format!("bucket {name:?}: {e}")))?;
        let part_size: usize = config.parse_or(PART_SIZE, 25 * 1024 * 1024)?;
        if part_size < MIN_PART_SIZE {
            return Err(TaskError::fatal(format!(
                "{PART_SIZE}: {part_size} is below S3's smallest part, {MIN_PART_SIZE} bytes"
            )));
        }
        Ok(Store {
            bucket,
            name,
            part_size,
            retries: config.parse_or(RETRIES, 3u32)?,
            backoff: Duration::from_millis(config.parse_or(BACKOFF, 200u64)?),
        })
    }

    /// Checks the bucket is there and ours to write: a missing bucket or refused access fails
    /// the task at once, naming the bucket.
    pub async fn check(&self, prefix: &str) -> Result<(), TaskError> {
        self.retry("list the bucket", || async {
            self.bucket
                .list_page(prefix.to_string(), None, None, None, Some(1))
                .await
                .map(|_| ())
        })
        .await
    }

    /// Writes `body` to `key` whole: one PUT, or a multipart upload aborted if it fails.
    pub async fn upload(
        &self,
        key: &str,
        body: &[u8],
        content_type: &str,
    ) -> Result<(), TaskError> {
        if body.len() <= self.part_size {
            return self
                .retry(&format!("upload {key:?}"), || async {
                    self.bucket
                        .put_object_with_content_type(key, body, content_type)
                        .await
                        .map(|_| ())
                })
                .await;
        }
        let upload = self
            .retry(
                &format!("start the multipart upload of {key:?}"),
                || async {
                    self.bucket
                        .initiate_multipart_upload(key, content_type)
                        .await
                },
            )
            .await?;
        let id = upload.upload_id;
        let result = async {
            let mut parts = Vec::new();
            for (i, chunk) in body.chunks(self.part_size).enumerate() {
                let number = i as u32 + 1;
                let part = self
                    .retry(&format!("upload part {number} of {key:?}"), || async {
                        self.bucket
                            .put_multipart_chunk(chunk.to_vec(), key, number, &id, content_type)
                            .await
                    })
                    .await?;
                parts.push(part);
            }
            self.retry(
                &format!("complete the multipart upload of {key:?}"),
                || async {
                    self.bucket
                        .complete_multipart_upload(key, &id, parts.clone())
                        .await
                        .map(|_| ())
                },
            )
            .await
        }
        .await;
        if result.is_err() {
            if let Err(e) = self.bucket.abort_upload(key, &id).await {
                tracing::warn!(key, "could not abort the failed multipart upload: {e}");
            }
        }
        result
    }

    /// Aborts the multipart uploads under `prefix` whose file name `left` accepts: the ones a
    /// task killed mid-upload left (they never became objects, but hold their parts).
    /// Returns how many.
    pub async fn abort_left(
        &self,
        prefix: &str,
        left: impl Fn(&str) -> bool,
    ) -> Result<usize, TaskError> {
        let pages = self
            .retry("list multipart uploads", || async {
                self.bucket
                    .list_multiparts_uploads(Some(prefix), None)
                    .await
            })
            .await?;
        let mut aborted = 0;
        for upload in pages.iter().flat_map(|p| &p.uploads) {
            let file = upload.key.rsplit('/').next().unwrap_or(&upload.key);
            if !left(file) {
                continue;
            }
            match self.bucket.abort_upload(&upload.key, &upload.id).await {
                Ok(()) => aborted += 1,
                // Gone already (another task's abort, or it completed): fine.
                Err(S3Error::HttpFailWithBody(404, _)) => {}
                Err(e) => {
                    return Err(self.error(&format!("abort the upload of {:?}", upload.key), e))
                }
            }
            tracing::info!(key = %upload.key, "aborted a multipart upload left unfinished");
        }
        Ok(aborted)
    }

    /// Runs `call` until it succeeds, fails for good, or `s3.part.retries` retries with
    /// doubling backoff are spent.
    async fn retry<T, F, Fut>(&self, what: &str, call: F) -> Result<T, TaskError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, S3Error>>,
    {
        let mut backoff = self.backoff;
        let mut attempt = 0;
        loop {
            match call().await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let error = self.error(what, e);
                    if !error.retriable || attempt >= self.retries {
                        return Err(error);
                    }
                    attempt += 1;
                    tracing::warn!(
                        "{} (retry {attempt} of {} in {backoff:?})",
                        error.message,
                        self.retries
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    fn error(&self, what: &str, e: S3Error) -> TaskError {
        let bucket = &self.name;
        match e {
            S3Error::HttpFailWithBody(status, body) => {
                let code = xml_field(&body, "Code").unwrap_or_default();
                let message = xml_field(&body, "Message").unwrap_or_default();
                let text = format!("{what} in bucket {bucket:?}: HTTP {status} {code} {message}");
                let text = text.trim_end().to_string();
                if status >= 500 || status == 408 || status == 429 {
                    TaskError::retriable(text)
                } else {
                    TaskError::fatal(text)
                }
            }
            other => TaskError::retriable(format!("{what} in bucket {bucket:?}: {other}")),
        }
    }
}

/// The text of `<name>…</name>` in an S3 error body.
fn xml_field(body: &str, name: &str) -> Option<String> {
    let start = body.find(&format!("<{name}>"))? + name.len() + 2;
    let end = body[start..].find(&format!("</{name}>"))? + start;
    Some(body[start..end].to_string())
}
