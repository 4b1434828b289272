//! The push side: a bounded queue drained by one thread, with retries and backoff.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One profile on its way.
pub(crate) struct Upload {
    pub name: String,
    pub from: SystemTime,
    pub until: SystemTime,
    pub sample_rate: i32,
    pub body: Vec<u8>,
}

/// `app.cpu{k=v,…}` with sorted keys.
pub(crate) fn series_name(app: &str, tags: &std::collections::BTreeMap<String, String>) -> String {
    let tags: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{app}.cpu{{{}}}", tags.join(","))
}

pub(crate) fn gzip(pprof: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(pprof)?;
    gz.finish()
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Upload>,
    closed: bool,
    dropped: u64,
    sent: u64,
}

pub(crate) struct Uploader {
    state: Arc<(Mutex<Queue>, Condvar)>,
    max: usize,
    thread: Option<JoinHandle<()>>,
    deadline: Arc<Mutex<Option<Instant>>>,
}

const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

enum Sent {
    Ok,
    /// Worth trying again (network error, 429, 5xx).
    Retry(String),
    /// Refused for good (other 4xx).
    Refused(String),
}

fn send(agent: &ureq::Agent, server: &str, token: Option<&str>, u: &Upload) -> Sent {
    let secs = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            .to_string()
    };
    let mut req = agent
        .post(format!("{server}/ingest"))
        .query("name", &u.name)
        .query("from", secs(u.from))
        .query("until", secs(u.until))
        .query("format", "pprof")
        .query("spyName", "rustspy")
        .query("sampleRate", u.sample_rate.to_string())
        .header("Content-Type", "application/octet-stream");
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    match req.send(&u.body[..]) {
        Ok(r) if r.status().is_success() => Sent::Ok,
        Ok(r) if r.status().as_u16() == 429 || r.status().is_server_error() => {
            Sent::Retry(format!("status {}", r.status()))
        }
        Ok(mut r) => Sent::Refused(format!(
            "status {}: {}",
            r.status(),
            r.body_mut().read_to_string().unwrap_or_default()
        )),
        Err(e) => Sent::Retry(e.to_string()),
    }
}

impl Uploader {
    /// `tls`: the TLS settings of https pushes; ureq's defaults when `None`.
    pub fn start(
        server: String,
        token: Option<String>,
        max: usize,
        tls: Option<ureq::tls::TlsConfig>,
    ) -> Self {
        let state: Arc<(Mutex<Queue>, Condvar)> = Arc::default();
        let deadline: Arc<Mutex<Option<Instant>>> = Arc::default();
        let (s, d) = (state.clone(), deadline.clone());
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)));
        if let Some(tls) = tls {
            config = config.tls_config(tls);
        }
        let agent: ureq::Agent = config.build().new_agent();
        let thread = std::thread::Builder::new()
            .name("kiln-uploader".into())
            .spawn(move || {
                let (lock, cv) = &*s;
                let mut backoff = MIN_BACKOFF;
                loop {
                    let upload = {
                        let mut q = lock.lock().unwrap_or_else(|e| e.into_inner());
                        while q.items.is_empty() && !q.closed {
                            q = cv.wait(q).unwrap_or_else(|e| e.into_inner());
                        }
                        match q.items.pop_front() {
                            Some(u) => u,
                            None => return, // closed and drained
                        }
                    };
                    match send(&agent, &server, token.as_deref(), &upload) {
                        Sent::Ok => {
                            lock.lock().unwrap_or_else(|e| e.into_inner()).sent += 1;
                            backoff = MIN_BACKOFF;
                        }
                        Sent::Refused(why) => {
                            log::error!("kiln: server refused {}: {why}", upload.name)
                        }
                        Sent::Retry(why) => {
                            let past_deadline = d
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .is_some_and(|t| Instant::now() >= t);
                            if past_deadline {
                                log::error!(
                                    "kiln: giving up on {} at shutdown: {why}",
                                    upload.name
                                );
                                continue;
                            }
                            log::warn!(
                                "kiln: push of {} failed ({why}); retrying in {backoff:?}",
                                upload.name
                            );
                            std::thread::sleep(backoff);
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                            lock.lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .items
                                .push_front(upload);
                        }
                    }
                }
            })
            .expect("spawning the uploader thread");
        Self {
            state,
            max,
            thread: Some(thread),
            deadline,
        }
    }

    /// Queues an upload, dropping the oldest when full.
    pub fn enqueue(&self, u: Upload) {
        let (lock, cv) = &*self.state;
        let mut q = lock.lock().unwrap_or_else(|e| e.into_inner());
        if q.items.len() >= self.max {
            q.items.pop_front();
            q.dropped += 1;
            log::warn!(
                "kiln: upload queue full; dropped the oldest profile ({} dropped so far)",
                q.dropped
            );
        }
        q.items.push_back(u);
        cv.notify_one();
    }

    /// Sends what is queued, giving up on failing pushes after `timeout`; returns how many were sent.
    pub fn finish(mut self, timeout: Duration) -> u64 {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + timeout);
        let (lock, cv) = &*self.state;
        lock.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let q = lock.lock().unwrap_or_else(|e| e.into_inner());
        log::info!(
            "kiln: stopped; {} profiles sent, {} dropped",
            q.sent,
            q.dropped
        );
        q.sent
    }

    #[cfg(test)]
    pub fn counts(&self) -> (usize, u64) {
        let q = self.state.0.lock().unwrap();
        (q.items.len(), q.dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Request line, headers and body of each request a fake server saw.
    type Seen = Arc<Mutex<Vec<(String, Vec<String>, Vec<u8>)>>>;

    /// A minimal HTTP server answering `statuses` in turn (then 200), recording requests.
    fn fake(statuses: Vec<u16>) -> (String, Seen) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen: Seen = Arc::default();
        let s = seen.clone();
        let n = Arc::new(AtomicUsize::new(0));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let mut headers = Vec::new();
                let mut len = 0;
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).unwrap();
                    if h.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    headers.push(h.trim().to_string());
                }
                let mut body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
                s.lock()
                    .unwrap()
                    .push((line.trim().to_string(), headers, body));
                let status = statuses
                    .get(n.fetch_add(1, Ordering::SeqCst))
                    .copied()
                    .unwrap_or(200);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        (url, seen)
    }

    fn upload(name: &str) -> Upload {
        Upload {
            name: name.into(),
            from: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            until: UNIX_EPOCH + Duration::from_secs(1_700_000_010),
            sample_rate: 100,
            body: vec![0x1f, 0x8b],
        }
    }

    #[test]
    fn series_names_sort_tags() {
        let tags = [
            ("z".to_string(), "1".to_string()),
            ("a".to_string(), "2".to_string()),
        ]
        .into_iter()
        .collect();
        assert_eq!(series_name("app", &tags), "app.cpu{a=2,z=1}");
    }

    #[test]
    fn pushes_with_params_and_auth_retrying_server_errors() {
        let (url, seen) = fake(vec![503, 503]);
        let u = Uploader::start(url, Some("tok".into()), 8, None);
        u.enqueue(upload("app.cpu{env=t}"));
        assert_eq!(u.finish(Duration::from_secs(10)), 1);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3, "two 503s, then accepted");
        let (line, headers, body) = &seen[2];
        assert!(line.starts_with("POST /ingest?"), "{line}");
        for p in [
            "name=app.cpu%7Benv%3Dt%7D",
            "from=1700000000",
            "until=1700000010",
            "format=pprof",
            "spyName=rustspy",
            "sampleRate=100",
        ] {
            assert!(line.contains(p), "{line} lacks {p}");
        }
        assert!(
            headers
                .iter()
                .any(|h| h.eq_ignore_ascii_case("authorization: Bearer tok")),
            "{headers:?}"
        );
        assert_eq!(body, &vec![0x1f, 0x8b]);
    }

    #[test]
    fn client_errors_are_not_retried() {
        let (url, seen) = fake(vec![400]);
        let u = Uploader::start(url, None, 8, None);
        u.enqueue(upload("a.cpu{}"));
        assert_eq!(u.finish(Duration::from_secs(5)), 0);
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[test]
    fn queue_drops_the_oldest_when_full() {
        // Port 9 (discard) on loopback refuses: nothing is sent, everything queues.
        let u = Uploader::start("http://127.0.0.1:9".into(), None, 2, None);
        // Hold the queue lock so the sender cannot take items while we fill it.
        {
            let (lock, _) = &*u.state;
            let _held = lock.lock().unwrap();
        }
        for i in 0..5 {
            u.enqueue(upload(&format!("a{i}")));
        }
        let (queued, dropped) = u.counts();
        assert!(queued <= 2);
        assert!(dropped >= 2, "dropped {dropped}");
        assert_eq!(u.finish(Duration::from_millis(100)), 0);
    }

    #[test]
    fn gzip_round_trips() {
        let body: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let gz = gzip(&body).unwrap();
        assert_eq!(&gz[..2], b"\x1f\x8b");
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut raw)
            .unwrap();
        assert_eq!(raw, body);
    }
}
