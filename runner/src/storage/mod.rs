//! Artifact storage: directories of files (models, JSON results, SVG) in object storage.
//!
//! Built on `object_store`; the same code serves local directories, S3 (and S3-compatible
//! servers such as MinIO or moto), Google Cloud Storage and Azure Blob Storage.
//!
//! # Locations
//! [`StorageUri`] accepts `file:///abs/path`, a plain local path (relative paths are resolved
//! against the current directory), `s3://bucket/prefix`, `gs://bucket/prefix` and
//! `az://container/prefix` (or `azure://`). An *artifact* lives under a prefix below that root,
//! e.g. `runs/<job>/prune`.
//!
//! # Credentials and endpoints: environment only
//! [`Storage::open`] reads the process environment ([`Storage::open_with_env`] takes the same
//! variables as explicit data). Nothing is read from config files of ours.
//! - **S3**: every `AWS_*` variable `object_store` knows, notably `AWS_ACCESS_KEY_ID`,
//!   `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` (default `us-east-1`),
//!   `AWS_ENDPOINT_URL` / `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`, `AWS_VIRTUAL_HOSTED_STYLE_REQUEST`,
//!   web identity (`AWS_WEB_IDENTITY_TOKEN_FILE`, `AWS_ROLE_ARN`) and instance metadata.
//!   `AWS_DEFAULT_REGION` also works. `PRUNEFORGE_S3_ENDPOINT` overrides the endpoint (for
//!   S3-compatible stores such as MinIO or moto). Requests are path-style
//!   (`<endpoint>/<bucket>/<key>`, what MinIO and moto expect) unless
//!   `AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true`. An `http://` endpoint requires
//!   `AWS_ALLOW_HTTP=true`; otherwise opening fails with [`StorageError::HttpNotAllowed`].
//! - **GCS**: `GOOGLE_APPLICATION_CREDENTIALS`, `GOOGLE_SERVICE_ACCOUNT` (path),
//!   `GOOGLE_SERVICE_ACCOUNT_KEY` (JSON), `SERVICE_ACCOUNT`, other `GOOGLE_*` keys.
//! - **Azure**: `AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`,
//!   `AZURE_STORAGE_SAS_KEY`, `AZURE_STORAGE_USE_EMULATOR`, `AZURE_CLIENT_ID` /
//!   `AZURE_CLIENT_SECRET` / `AZURE_TENANT_ID`, `IDENTITY_ENDPOINT`, other `AZURE_*` keys.
//!
//! TLS is rustls with the `ring` provider (installed process-wide on first cloud open).
//!
//! # Commit protocol
//! Files are written to their final keys `<prefix>/<relative path>`; the artifact becomes
//! visible only when `<prefix>/_SUCCESS` — the [`Manifest`] listing every file's path, size
//! and sha256, the creation time and the writer version — is written, last, in one atomic put.
//! Readers ([`Storage::is_committed`], [`Storage::read_manifest`], [`Storage::download_dir`])
//! trust nothing without it, so a half-written stage is never taken for a finished one.
//! Re-uploading to a committed prefix with different content deletes `_SUCCESS` before it
//! touches any file; deleting a prefix deletes `_SUCCESS` first as well. Downloads verify each
//! file's size and sha256 against the manifest and rename a verified temp file into place.
//!
//! # Resume after an interrupted upload
//! After each file is stored, [`Storage::upload_dir`] writes a small receipt
//! `<prefix>/_pruneforge_receipts/<path>` (size + sha256). A re-run after a crash:
//! 1. reads the receipts (and the old manifest, if any) and lists the prefix;
//! 2. reuses a file when the object exists with the local size and the recorded sha256 equals
//!    the local file's sha256 (the local file is hashed, never the remote one); everything else
//!    is uploaded again from scratch;
//! 3. commits, then deletes the receipts.
//!
//! An upload killed mid-multipart leaves no object at its key (parts become visible only on
//! completion), so the file is simply uploaded again. The stale parts: on local storage the
//! `<name>#<n>` staging files are removed by the next `upload_dir`/`delete_prefix`; on S3/GCS/Azure
//! `object_store` cannot list pending multipart uploads, so in-process failures abort the upload
//! and parts orphaned by a killed process are reaped by the bucket's lifecycle rule
//! (S3: `AbortIncompleteMultipartUpload`; set it on production buckets).
//!
//! # One writer per prefix
//! Artifacts are content-addressed and shared, so two pods may want the same prefix at once.
//! Stage execution takes the prefix's writer lease first ([`Storage::acquire_writer_lease`],
//! module `lease`): a conditional put creates one lease generation per writer, a heartbeat
//! keeps it alive, and a second writer waits for the first to release it or die. `_SUCCESS`
//! itself is written with a conditional put as well: if another writer committed in the
//! meantime, identical content is accepted and different content is a
//! [`StorageError::CommitConflict`], never a silent overwrite. S3 stores get
//! `If-None-Match: *` for this unless `AWS_CONDITIONAL_PUT=disabled`.
//!
//! # Sync callers
//! [`BlockingStorage`] wraps every call for the synchronous stage code; [`block_on`] runs a
//! single future.

mod blocking;
mod download;
mod error;
mod lease;
mod local;
mod manifest;
mod objects;
mod store;
mod upload;
mod uri;

pub use blocking::{block_on, BlockingStorage};
pub use download::DownloadReport;
pub use error::{Result, StorageError};
pub use lease::{holder_id, LeaseOptions, LeaseOutcome, WriterLease, LEASES_DIR, LEASE_TTL_ENV};
pub use manifest::{Manifest, ManifestFile, MANIFEST_FILE, MANIFEST_FORMAT, RECEIPTS_DIR, WRITER};
pub use objects::ObjectInfo;
pub use store::{Storage, PRUNEFORGE_S3_ENDPOINT};
pub use upload::{ProgressFn, UploadEvent, UploadOptions, UploadReport, MIN_PART_SIZE};
pub use uri::StorageUri;
