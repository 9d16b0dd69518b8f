//! One run of a pipeline at a time, across processes and machines: a lock
//! object `_locks/<pipeline>.json` in the warehouse, created only if absent,
//! naming its owner (host, pid, run) and an expiry that a background task
//! renews while the run lasts. A holder that died leaves a lock that expires;
//! on the same host a holder whose process is gone is recognized at once. On
//! S3 a takeover is a conditional write (If-Match on the stale lock), so two
//! contenders cannot both win; local disk has no compare-and-swap, so there
//! the takeover of a dead holder's lock is: read it again, delete it only if
//! it is still the stale one, create-if-absent. On object stores, and after
//! any takeover, the winner also reads the lock back after a short settle
//! delay and steps aside if it is not named there (some S3-compatible
//! servers check If-None-Match before the write rather than atomically with
//! it; on local disk a slow contender may delete a lock just written).
//! Renewal is conditional too: If-Match where the store has it, elsewhere
//! only after reading back that the lock still names this run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::sink::Warehouse;

/// On object stores, how long to let racing lock writes land before reading
/// the lock back.
const SETTLE: Duration = Duration::from_millis(300);

/// How long a lock lives without renewal.
pub const DEFAULT_TTL: Duration = Duration::from_secs(120);

/// What the lock object says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockInfo {
    pub pipeline: String,
    pub host: String,
    pub pid: u32,
    pub run_id: String,
    pub acquired_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl LockInfo {
    /// The error a run of `pipeline` gets while this holder has the lock.
    fn held_against(&self, pipeline: &str) -> Error {
        Error::Locked {
            pipeline: pipeline.into(),
            holder: format!("{} pid {} (run {})", self.host, self.pid, self.run_id),
            since: self.acquired_at,
            until: self.expires_at,
        }
    }

    /// Whether `other` names the same holder (host, pid and run).
    fn same_holder(&self, other: &LockInfo) -> bool {
        self.run_id == other.run_id && self.pid == other.pid && self.host == other.host
    }

    /// Whether the holder is certainly gone: expired, or a process of this
    /// host that no longer exists.
    fn is_stale(&self, now: DateTime<Utc>) -> bool {
        self.expires_at < now
            || (self.host == hostname() && self.pid != std::process::id() && !pid_alive(self.pid))
    }
}

struct Inner {
    wh: Warehouse,
    path: Path,
    info: std::sync::Mutex<LockInfo>,
    version: std::sync::Mutex<Option<UpdateVersion>>,
    lost: AtomicBool,
    ttl: Duration,
}

/// A held pipeline lock; renewed in the background until released. Dropped
/// without [`RunLock::release`] (a run that panicked), it stops renewing and
/// deletes the lock in the background, so a long-lived process (the
/// scheduler) does not keep a dead run's lock alive.
pub struct RunLock {
    inner: Arc<Inner>,
    renewer: tokio::task::JoinHandle<()>,
    released: bool,
}

impl Drop for RunLock {
    fn drop(&mut self) {
        self.renewer.abort();
        if self.released {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let inner = Arc::clone(&self.inner);
            rt.spawn(async move { delete_if_ours(&inner).await });
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into())
}

fn pid_alive(pid: u32) -> bool {
    let proc = std::path::Path::new("/proc");
    if !proc.exists() {
        return true; // cannot tell: rely on the expiry
    }
    // A zombie (killed, not yet reaped) holds no lock either.
    match std::fs::read_to_string(proc.join(pid.to_string()).join("stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

impl RunLock {
    /// Takes the lock of `pipeline`, or fails with [`Error::Locked`] naming the holder.
    pub async fn acquire(
        wh: &Warehouse,
        pipeline: &str,
        run_id: &str,
        ttl: Duration,
    ) -> Result<RunLock> {
        let path = crate::sink::partition::lock_file(wh.root(), pipeline);
        let now = Utc::now();
        let info = LockInfo {
            pipeline: pipeline.to_string(),
            host: hostname(),
            pid: std::process::id(),
            run_id: run_id.to_string(),
            acquired_at: now,
            expires_at: now
                + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::seconds(120)),
        };
        let put = |mode: PutMode, info: &LockInfo| {
            let body = serde_json::to_vec_pretty(info).expect("lock serializes");
            let opts = PutOptions {
                mode,
                ..Default::default()
            };
            let path = path.clone();
            let store = Arc::clone(wh.store());
            async move { store.put_opts(&path, PutPayload::from(body), opts).await }
        };
        let mut attempts = 0;
        let mut took_over = false;
        let result = loop {
            attempts += 1;
            match put(PutMode::Create, &info).await {
                Ok(r) => break r,
                Err(object_store::Error::AlreadyExists { .. }) if attempts <= 3 => {
                    let (held, version) = match wh.store().get(&path).await {
                        Ok(g) => {
                            let v = UpdateVersion {
                                e_tag: g.meta.e_tag.clone(),
                                version: g.meta.version.clone(),
                            };
                            let bytes = g.bytes().await.map_err(|e| Error::store(&path, e))?;
                            (serde_json::from_slice::<LockInfo>(&bytes).ok(), v)
                        }
                        Err(object_store::Error::NotFound { .. }) => continue, // released meanwhile
                        Err(e) => return Err(Error::store(&path, e)),
                    };
                    match held {
                        Some(h) if !h.is_stale(Utc::now()) => return Err(h.held_against(pipeline)),
                        _ => {
                            tracing::warn!(pipeline, path = %path, "taking over a stale lock");
                            took_over = true;
                            match put(PutMode::Update(version), &info).await {
                                Ok(r) => break r,
                                Err(object_store::Error::NotImplemented { .. }) => {
                                    // Local disk: no If-Match. Remove the dead holder's
                                    // lock only if it is still the one judged stale (not
                                    // a fresh lock another contender just wrote), then
                                    // race fairly for the create; the read-back below
                                    // settles what is left of the race.
                                    let now_held = read_holder(wh, &path).await;
                                    let same = match (&held, &now_held) {
                                        (Some(a), Some(b)) => a.same_holder(b),
                                        (None, _) => true, // unreadable: nobody's
                                        (Some(_), None) => false,
                                    };
                                    if same {
                                        let _ = wh.store().delete(&path).await;
                                    }
                                }
                                Err(object_store::Error::Precondition { .. }) => {} // someone else took it: look again
                                Err(e) => return Err(Error::store(&path, e)),
                            }
                        }
                    }
                }
                Err(object_store::Error::AlreadyExists { .. }) => {
                    return Err(Error::State {
                        path: path.to_string(),
                        message: "could not take the pipeline lock".into(),
                    })
                }
                Err(e) => return Err(Error::store(&path, e)),
            }
        };
        let mut version = UpdateVersion {
            e_tag: result.e_tag,
            version: result.version,
        };
        if !wh.is_local() || took_over {
            // Some S3-compatible servers check If-None-Match before writing,
            // not atomically with it (s3s-fs does): two creators can both
            // "succeed" and the last write stays. On local disk, a takeover is
            // delete-then-create, and a slower contender may delete the lock
            // a faster one just wrote. Either way: let racing writes land,
            // then read the lock back; whoever is not in it steps aside.
            tokio::time::sleep(SETTLE).await;
            let got = wh
                .store()
                .get(&path)
                .await
                .map_err(|e| Error::store(&path, e))?;
            let v = UpdateVersion {
                e_tag: got.meta.e_tag.clone(),
                version: got.meta.version.clone(),
            };
            let bytes = got.bytes().await.map_err(|e| Error::store(&path, e))?;
            match serde_json::from_slice::<LockInfo>(&bytes) {
                Ok(h) if h.same_holder(&info) => version = v,
                Ok(h) => return Err(h.held_against(pipeline)),
                Err(e) => {
                    return Err(Error::State {
                        path: path.to_string(),
                        message: format!("unreadable lock: {e}"),
                    })
                }
            }
        }
        let inner = Arc::new(Inner {
            wh: wh.clone(),
            path,
            info: std::sync::Mutex::new(info),
            version: std::sync::Mutex::new(Some(version)),
            lost: AtomicBool::new(false),
            ttl,
        });
        let renewer = tokio::spawn(renew(Arc::clone(&inner)));
        tracing::debug!(pipeline, run_id, "pipeline lock taken");
        Ok(RunLock {
            inner,
            renewer,
            released: false,
        })
    }

    /// Whether the lock was lost (renewal failed: another process took it).
    pub fn lost(&self) -> bool {
        self.inner.lost.load(Ordering::Relaxed)
    }

    /// Stops renewing and deletes the lock if it is still ours.
    pub async fn release(mut self) {
        self.renewer.abort();
        self.released = true;
        delete_if_ours(&self.inner).await;
    }
}

/// Whether `pipeline`'s lock is live and names `run_id` (that run is in progress).
pub async fn is_held_by(wh: &Warehouse, pipeline: &str, run_id: &str) -> bool {
    read_holder(wh, &crate::sink::partition::lock_file(wh.root(), pipeline))
        .await
        .is_some_and(|h| h.run_id == run_id && !h.is_stale(Utc::now()))
}

/// Deletes the lock object if it still names this holder (and was not lost).
async fn delete_if_ours(inner: &Inner) {
    if inner.lost.load(Ordering::Relaxed) {
        return;
    }
    let info = inner.info.lock().expect("lock info").clone();
    if read_holder(&inner.wh, &inner.path)
        .await
        .is_some_and(|l| l.same_holder(&info))
    {
        if let Err(e) = inner.wh.store().delete(&inner.path).await {
            tracing::warn!(path = %inner.path, error = %e, "could not release the pipeline lock; it will expire");
        }
    }
}

/// The holder the lock object names now (None: absent or unreadable).
async fn read_holder(wh: &Warehouse, path: &Path) -> Option<LockInfo> {
    let g = wh.store().get(path).await.ok()?;
    serde_json::from_slice::<LockInfo>(&g.bytes().await.ok()?).ok()
}

/// Pushes the expiry forward every third of the TTL, conditionally on the
/// version last written (where the store supports it).
async fn renew(inner: Arc<Inner>) {
    loop {
        tokio::time::sleep(inner.ttl / 3).await;
        let body = {
            let mut info = inner.info.lock().expect("lock info");
            info.expires_at = Utc::now()
                + chrono::Duration::from_std(inner.ttl).unwrap_or(chrono::Duration::seconds(120));
            serde_json::to_vec_pretty(&*info).expect("lock serializes")
        };
        let version = inner.version.lock().expect("lock version").clone();
        let put = |mode| {
            inner.wh.store().put_opts(
                &inner.path,
                PutPayload::from(body.clone()),
                PutOptions {
                    mode,
                    ..Default::default()
                },
            )
        };
        let info = inner.info.lock().expect("lock info").clone();
        // Local disk has no If-Match: renew only if the lock still names us.
        let overwrite_if_ours = || async {
            match read_holder(&inner.wh, &inner.path).await {
                Some(h) if h.same_holder(&info) => put(PutMode::Overwrite).await,
                other => Err(object_store::Error::Precondition {
                    path: inner.path.to_string(),
                    source: format!(
                        "the lock now names {}",
                        other.map_or("nobody".to_string(), |h| format!(
                            "{} pid {} (run {})",
                            h.host, h.pid, h.run_id
                        ))
                    )
                    .into(),
                }),
            }
        };
        let result = match version {
            Some(v) => match put(PutMode::Update(v)).await {
                Err(object_store::Error::NotImplemented { .. }) => overwrite_if_ours().await,
                other => other,
            },
            None => overwrite_if_ours().await,
        };
        match result {
            Ok(r) => {
                *inner.version.lock().expect("lock version") = Some(UpdateVersion {
                    e_tag: r.e_tag,
                    version: r.version,
                })
            }
            Err(e) => {
                tracing::error!(path = %inner.path, error = %e, "lost the pipeline lock; stopping after the current window");
                inner.lost.store(true, Ordering::Relaxed);
                return;
            }
        }
    }
}
